from services.registry.entrypoints.main import main

main()
