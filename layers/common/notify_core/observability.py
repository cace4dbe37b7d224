"""Logger, Tracer and Metrics, created once and configured by POWERTOOLS_* variables."""

from __future__ import annotations

import os
import warnings

from aws_lambda_powertools import Logger, Metrics, Tracer

# An invocation that emits no business metric is normal here (a GET, a 4xx); don't warn about it.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger(service=os.getenv("POWERTOOLS_SERVICE_NAME", "notification-platform"))
tracer = Tracer(service=os.getenv("POWERTOOLS_SERVICE_NAME", "notification-platform"))
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", "NotificationPlatform"))
