"""Retry sweeper (EventBridge rate(1 minute)): due retries, due scheduled sends, stranded rows → SQS."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from notify_core import sweeper
from notify_core.config import get_settings
from notify_core.integrations import outbox
from notify_core.observability import logger, metrics, tracer

get_settings()  # a wrong setting fails the cold start


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = sweeper.sweep()
    metrics.add_metric(name="SweptNotifications", unit="Count", value=report.total)
    webhooks = outbox.sweep()  # feedback: webhook deliveries whose message is missing
    metrics.add_metric(name="SweptWebhookDeliveries", unit="Count", value=webhooks)
    return {
        "enqueued": report.enqueued,
        "failed_to_enqueue": report.failed_to_enqueue,
        "batches": report.batches,
        "webhook_deliveries": webhooks,
    }
