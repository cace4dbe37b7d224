"""Integrations with the world outside the pipeline: what providers report after a send (provider
callbacks, `callbacks`), and what the platform tells its customers (outgoing webhooks: endpoints in
`webhooks`, the transactional `outbox`, the `dispatcher`, and the `guarded_http` client every request
to a customer URL goes through, with its `addresses` rules)."""
