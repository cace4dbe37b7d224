"""Sender function: SQS notifications queue → the delivery engine → providers, with partial batch
failures. This is the edge: it parses each record once, hands the batch and the invocation's
deadline to the engine, and turns the engine's report into Powertools' partial batch response."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from notify_core import db, providers
from notify_core.config import get_settings
from notify_core.delivery import Deadline, Deps, Incoming, deliver
from notify_core.observability import logger, metrics, tracer
from notify_core.providers import ProviderSettings
from notify_core.sqs_batch import QueueBatch, QueueRecord

# A wrong setting fails the cold start, not the first batch.
settings = get_settings()
ProviderSettings.from_env(secret_loader=lambda arn: {})


class SenderProcessor(QueueBatch):
    """Powertools' BatchProcessor for SQS; the whole batch goes to the engine at once (it claims
    the rows in one statement and sends them in a sliding window), and each record's result comes
    back through the processor's own success and failure handlers. A record whose body is not a
    notification message fails validation and is reported (SQS redrives it to the DLQ)."""

    def __init__(self) -> None:
        super().__init__(lambda: get_settings().send_concurrency, "send")

    def process(self) -> list[tuple[Any, ...]]:
        results, parsed = self.parse()
        if not parsed:
            return results
        batch = [
            Incoming(model.messageId, model.body, model.attributes.SentTimestamp.timestamp())
            for model in parsed
        ]
        try:
            deadline = Deadline(self.lambda_context.get_remaining_time_in_millis())
            report = deliver(batch, deadline, Deps.production(pool=self.pool()))
        except Exception as exc:  # noqa: BLE001 — whatever stopped the batch, every record comes back
            logger.exception("batch not delivered")
            return results + [
                self.failure_handler(model, (type(exc), exc, exc.__traceback__)) for model in parsed
            ]
        for model in parsed:
            failure = report.failed.get(model.messageId)
            if failure is not None:
                results.append(self.failure_handler(model, (type(failure), failure, failure.__traceback__)))
            else:
                outcome = report.outcomes.get(model.messageId)
                results.append(self.success_handler(model, outcome.kind if outcome else "skipped"))
        return results


processor = SenderProcessor()


def _unused_record_handler(record: QueueRecord) -> str:
    raise NotImplementedError("SenderProcessor.process hands the whole batch to the engine")


# Init phase: start connecting to PostgreSQL (in the pool's background) and build the providers in
# WARM_PROVIDERS (provider secret, SDK import), rather than in the first batch's critical path.
if settings.database_url or settings.database_secret_arn:
    db.get_pool()  # connects in the pool's background; a failure there is retried by the pool
providers.warm(settings.warm_providers)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=_unused_record_handler, processor=processor, context=context
    )
