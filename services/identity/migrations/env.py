from services.kit.db import run_migrations_env
from services.identity.store import metadata

run_migrations_env(metadata)
