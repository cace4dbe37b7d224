"""DLQ processor (SQS event on the notifications DLQ): records what died and why, idempotently."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from notify_core import dlq
from notify_core.observability import logger, metrics, tracer
from notify_core.queue import QueueMessage

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: Any) -> str:
    try:
        message = QueueMessage.model_validate_json(record.body)
    except ValueError:
        # Nothing to attach it to: keep the body in the logs and let the message go.
        logger.error(
            "unreadable dead letter dropped", extra={"body": record.body[:2000], "id": record.message_id}
        )
        metrics.add_metric(name="UnreadableDeadLetters", unit="Count", value=1)
        return "dropped"
    receives = record.attributes.approximate_receive_count
    dlq.record_redriven([message.id], f"redriven by SQS after {receives} receives without success")
    return "recorded"


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
