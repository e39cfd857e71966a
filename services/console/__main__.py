from services.console.entrypoints.main import main

main()
