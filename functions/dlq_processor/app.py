"""DLQ processor (SQS event on the notifications DLQ): records what died and why, idempotently.
Only a notification still waiting on the dead message becomes a dead letter; one that was sent,
is being sent, waits for a retry or was re-queued since is left alone (notify_core.dead_letters)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from notify_core import dead_letters
from notify_core.config import get_settings
from notify_core.observability import logger, metrics, tracer
from notify_core.queue import QueueMessage

get_settings()  # a wrong setting fails the cold start

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> str:
    try:
        message = QueueMessage.parse(record.body)
    except ValidationError:
        # Nothing to attach it to: keep the body in the logs and let the message go.
        logger.error(
            "unreadable dead letter dropped", extra={"body": record.body[:2000], "id": record.message_id}
        )
        metrics.add_metric(name="UnreadableDeadLetters", unit="Count", value=1)
        return "dropped"
    attributes = record.attributes
    sent_at = datetime.fromtimestamp(int(attributes.sent_timestamp) / 1000, UTC)
    failed = dead_letters.record_redriven(
        [dead_letters.Redriven(message.id, sent_at, int(attributes.approximate_receive_count))]
    )
    if failed:
        metrics.add_metric(name="NotificationsRedriven", unit="Count", value=len(failed))
        return "recorded"
    metrics.add_metric(name="RedrivesIgnored", unit="Count", value=1)
    return "ignored"


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
