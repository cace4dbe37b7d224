"""The sample events of the queue and schedule functions (also used by `sam local invoke -e`) have
the shapes Lambda delivers, and the handlers' own models accept them — no services needed."""

from __future__ import annotations

import json
from pathlib import Path

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel, SqsModel

from notify_core.delivery import NotificationRecord
from notify_core.queue import QueueMessage

EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_sender_and_dlq_events_carry_notification_messages() -> None:
    for name in ("sender_batch.json", "dlq_processor_batch.json"):
        raw = json.loads((EVENTS / name).read_text())
        event = parse(event=raw, model=SqsModel)
        assert event.Records
        for record in raw["Records"]:
            parsed = NotificationRecord.model_validate(record)
            assert parsed.body.id == QueueMessage.model_validate_json(record["body"]).id


def test_schedule_events_are_eventbridge_scheduled_events() -> None:
    for name in ("retry_sweeper_schedule.json", "cleanup_schedule.json"):
        event = parse(event=json.loads((EVENTS / name).read_text()), model=EventBridgeModel)
        assert event.detail_type == "Scheduled Event"
        assert event.source == "aws.events"
