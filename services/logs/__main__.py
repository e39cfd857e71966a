from services.logs.entrypoints.main import main

main()
