"""Domain package of the notification platform, shipped to Lambda as the shared layer."""
