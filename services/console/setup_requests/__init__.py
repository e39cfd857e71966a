"""Administration > Integrations > Set Up an Integration: pre-built integration setup requests,
the organisation's list and detail, and the platform team's queue and its actions."""
