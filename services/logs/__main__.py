from services.logs.main import main

main()
