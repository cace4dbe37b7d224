"""Cleanup (EventBridge, daily): dead letters, attempts and idempotency keys past their retention,
and the secrets of provider configs that no longer exist."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from notify_core import cleanup, provider_configs
from notify_core.config import get_settings
from notify_core.observability import logger, metrics, tracer

get_settings()  # a wrong setting fails the cold start


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    removed = cleanup.run()
    removed["provider_config_secrets"] = provider_configs.remove_orphan_secrets()
    for job, count in removed.items():
        metrics.add_metric(name=f"CleanedUp{job.title().replace('_', '')}", unit="Count", value=count)
    return removed
