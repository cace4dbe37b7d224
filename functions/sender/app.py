"""Sender function: SQS notifications queue → providers, with partial batch failures."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from notify_core import db, providers
from notify_core.config import get_settings
from notify_core.delivery import DeliveryProcessor
from notify_core.observability import logger, metrics, tracer

processor = DeliveryProcessor()
# Init phase: start connecting to PostgreSQL (in the pool's background) and build the providers in
# WARM_PROVIDERS (provider secret, SDK import), rather than in the first batch's critical path.
db.get_pool()
providers.warm(get_settings().warm_providers)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=processor.record_handler, processor=processor, context=context
    )
