"""Administration > Integrations: the list, create, detail, and the lifecycle actions."""
