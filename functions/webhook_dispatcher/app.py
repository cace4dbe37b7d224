"""Webhook dispatcher (SQS event on the webhooks queue): delivers the outbox's webhook events to
customer endpoints, signed per Standard Webhooks, through the guarded client; partial batch
failures. The edge: parse each record once, hand the batch to notify_core.integrations.dispatcher."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from notify_core.config import get_settings
from notify_core.integrations import dispatcher
from notify_core.observability import logger, metrics, tracer
from notify_core.sqs_batch import QueueBatch, QueueRecord

get_settings()  # a wrong setting fails the cold start


class DispatchProcessor(QueueBatch):
    """The whole batch goes to the dispatcher at once (one claim, concurrent POSTs, one record);
    a record whose body is unreadable is reported (SQS redrives it to the webhooks DLQ). Each body
    is a webhook delivery's id, in the same wire format as the notifications queue."""

    def __init__(self) -> None:
        super().__init__(lambda: get_settings().webhook_send_concurrency, "webhook")

    def process(self) -> list[tuple[Any, ...]]:
        results, parsed = self.parse()
        if not parsed:
            return results
        try:
            report = dispatcher.dispatch([model.body for model in parsed], pool=self.pool())
        except Exception as exc:  # noqa: BLE001 — whatever stopped the batch, every record comes back
            logger.exception("webhook batch not dispatched")
            return results + [self.failure_handler(m, (type(exc), exc, exc.__traceback__)) for m in parsed]
        for name, ids in (
            ("Delivered", report.delivered),
            ("Retried", report.retrying),
            ("Failed", report.failed),
        ):
            if ids:
                metrics.add_metric(name=f"Webhooks{name}", unit="Count", value=len(ids))
        if report.disabled:
            metrics.add_metric(name="WebhookEndpointsDisabled", unit="Count", value=len(report.disabled))
            logger.warning(
                "webhook endpoints disabled", extra={"endpoints": [str(i) for i in report.disabled]}
            )
        return results + [self.success_handler(m, "dispatched") for m in parsed]


processor = DispatchProcessor()


def _unused_record_handler(record: QueueRecord) -> str:
    raise NotImplementedError("DispatchProcessor.process hands the whole batch to the dispatcher")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=_unused_record_handler, processor=processor, context=context
    )
