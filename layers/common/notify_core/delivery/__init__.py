"""Delivery: the engine (`engine.deliver`) runs each claimed notification through the steps
(`steps.STEPS`) and records what happened by the outcome table (`outcomes.OUTCOMES`). The SQS edge
(the sender function) parses records and hands the batch and its deadline to `deliver`."""

from .engine import BatchReport, Deadline, Deps, Incoming, deliver
from .outcomes import OUTCOMES, Outcome
from .steps import STEPS, BatchContext, Claim, backoff_seconds

__all__ = [
    "OUTCOMES",
    "STEPS",
    "BatchContext",
    "BatchReport",
    "Claim",
    "Deadline",
    "Deps",
    "Incoming",
    "Outcome",
    "backoff_seconds",
    "deliver",
]
