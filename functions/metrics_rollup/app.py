"""Metrics roll-up (EventBridge, every 5 minutes): recounts the hours that changed since the last run
(notify_core.metrics_rollup). Incremental and idempotent: a run with nothing marked does nothing,
and a run over hours already counted writes the same rows again."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from notify_core import metrics_rollup
from notify_core.config import get_settings
from notify_core.observability import logger, metrics, tracer

get_settings()  # a wrong setting fails the cold start


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    # Start no chunk later than 30 s before the function's timeout (a chunk takes seconds at most).
    budget_s = max(5.0, context.get_remaining_time_in_millis() / 1000 - 30)
    result = metrics_rollup.rollup(budget_s=budget_s)
    metrics.add_metric(name="MetricsHoursRolledUp", unit="Count", value=result["hours"])
    return result
