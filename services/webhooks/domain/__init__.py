"""The webhooks domain: subscriptions, deliveries, the retry schedule and the signing recipe, pure rules."""
