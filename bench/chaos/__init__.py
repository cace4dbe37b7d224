"""The fault-injection suite (`make chaos`): does the platform lose nothing, and duplicate only
where no one can prevent it, when its parts fail under load?

Each scenario runs the whole system as a developer does — `notify-local` (a subprocess it may
SIGKILL and restart) over HTTP, PostgreSQL and Redis servers of the suite's own (which it stops
and restarts), SQS on LocalStack, and the provider stub in its own process speaking SendGrid's API
to the real SDK — offers load, injects one fault, waits until every notification is final, and
then measures from the database, the stub's record of every request and the runtime's metrics.

Scenarios: provider faults (30% mixed 5xx, 429 + Retry-After, slow answers past the timeout,
permanent errors) over 10,000 notifications; PostgreSQL restarted, and stopped for 20 s; Redis
stopped for 30 s; the runtime killed with SIGKILL mid-batch and restarted; duplicate SQS messages;
SQS messages deleted (recovered by the sweeper's stale-queued pass).

Targets, per scenario: nothing lost; no provider duplicates without ambiguity (after a SIGKILL: at
most the sends in progress at the kill; under timeouts: only ambiguous sends, each counted by the
metric); no dead letter claiming a notification the provider took was not sent; during a database
outage every API request answered within 10 s. Definitions: bench/chaos/measure.py.
"""
