"""The sample events of the queue and schedule functions (also used by `sam local invoke -e`) have
the shapes Lambda delivers, and the handlers' own models accept them — no services needed."""

from __future__ import annotations

import json
from pathlib import Path

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel, SqsModel

from notify_core.queue import QueueMessage
from notify_local.lambda_env import load_module

EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_sender_and_dlq_events_carry_notification_messages() -> None:
    record_model = load_module("functions/sender/", "app").QueueRecord
    for name in ("sender_batch.json", "dlq_processor_batch.json"):
        raw = json.loads((EVENTS / name).read_text())
        event = parse(event=raw, model=SqsModel)
        assert event.Records
        for record in raw["Records"]:
            parsed = record_model.model_validate(record)
            assert parsed.body.id == QueueMessage.parse(record["body"]).id


def test_schedule_events_are_eventbridge_scheduled_events() -> None:
    for name in ("retry_sweeper_schedule.json", "cleanup_schedule.json"):
        event = parse(event=json.loads((EVENTS / name).read_text()), model=EventBridgeModel)
        assert event.detail_type == "Scheduled Event"
        assert event.source == "aws.events"


def test_webhook_dispatcher_event_carries_delivery_ids() -> None:
    record_model = load_module("functions/webhook_dispatcher/", "app").QueueRecord
    raw = json.loads((EVENTS / "webhook_dispatcher_batch.json").read_text())
    assert parse(event=raw, model=SqsModel).Records
    for record in raw["Records"]:
        assert record_model.model_validate(record).body.id == QueueMessage.parse(record["body"]).id


def test_the_queue_wire_format_carries_ids_and_only_a_put_back_copy_its_first_send_time() -> None:
    import uuid

    plain = QueueMessage(id=uuid.uuid4(), tenant_id=uuid.uuid4())
    assert json.loads(plain.body()) == {"id": str(plain.id), "tenant_id": str(plain.tenant_id)}
    back = plain.model_copy(update={"first_sent_at": 1795600000.5})
    assert QueueMessage.parse(back.body()) == back
    assert json.loads(back.body())["first_sent_at"] == 1795600000.5
