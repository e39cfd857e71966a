from services.kit.db import run_migrations_env
from services.logs.adapters.store import metadata

run_migrations_env(metadata)
