from services.edge.entrypoints.main import main

main()
