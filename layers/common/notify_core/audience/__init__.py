"""Who gets what, when, in which words: templates with locales, categories, users' preferences and
quiet hours, suppressions, one-click unsubscribe, and messages that fan out to users' channels.

Ingest renders and screens (`ingest`); the delivery engine checks again per batch (`delivery`:
one prefetch, three steps); the API's routes call the modules here.
"""
