from services.webhooks.entrypoints.main import main

main()
