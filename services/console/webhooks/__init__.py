"""Administration > Webhooks: subscriptions, their delivery log, test deliveries and secrets."""
