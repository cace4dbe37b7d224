"""Local development helpers: start PostgreSQL, Redis and an SQS endpoint on loopback."""
