"""Webhook dispatcher (SQS event on the webhooks queue): delivers the outbox's webhook events to
customer endpoints, signed per Standard Webhooks, through the guarded client; partial batch
failures. The edge: parse each record once, hand the batch to notify_core.integrations.dispatcher."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Json, ValidationError

from notify_core.config import get_settings
from notify_core.integrations import dispatcher
from notify_core.observability import logger, metrics, tracer
from notify_core.queue import QueueMessage

get_settings()  # a wrong setting fails the cold start


class DeliveryRecord(SqsRecordModel):
    body: Json[QueueMessage]  # a webhook delivery's id (the same wire format as the notifications queue)


class DispatchProcessor(BatchProcessor):
    """The whole batch goes to the dispatcher at once (one claim, concurrent POSTs, one record);
    a record whose body is unreadable is reported (SQS redrives it to the webhooks DLQ)."""

    def __init__(self) -> None:
        super().__init__(EventType.SQS, model=DeliveryRecord, raise_on_entire_batch_failure=False)
        self._pool: ThreadPoolExecutor | None = None

    def post_pool(self) -> ThreadPoolExecutor:
        """This execution environment's POST threads: WEBHOOK_SEND_CONCURRENCY of them."""
        size = get_settings().webhook_send_concurrency
        if self._pool is None or self._pool._max_workers != size:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="webhook")
        return self._pool

    def process(self) -> list[tuple[Any, ...]]:
        results: list[tuple[Any, ...]] = []
        parsed: list[DeliveryRecord] = []
        for record in self.records:
            try:
                parsed.append(DeliveryRecord.model_validate(record))
            except ValidationError:
                results.append(self._register_model_validation_error_record(record))
        if not parsed:
            return results
        try:
            report = dispatcher.dispatch([model.body for model in parsed], pool=self.post_pool())
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


def _unused_record_handler(record: DeliveryRecord) -> str:
    raise NotImplementedError("DispatchProcessor.process hands the whole batch to the dispatcher")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=_unused_record_handler, processor=processor, context=context
    )
