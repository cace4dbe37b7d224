"""SQS: the queue carries notification ids only; the database is the source of truth."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from . import aws
from .config import get_settings
from .observability import logger

SQS_BATCH = 10  # SendMessageBatch's limit
MAX_DELAY_SECONDS = 900  # SQS's DelaySeconds limit (15 minutes)

_client: Any = None
_lock = threading.Lock()
_pool = ThreadPoolExecutor(max_workers=10, thread_name_prefix="sqs")


def get_sqs() -> Any:
    """The container's SQS client (notify_core.aws: boto3's calls without its ~165 ms import and
    client creation on the first request that enqueues)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = aws.client(
                    "sqs",
                    endpoint_url=get_settings().aws_endpoint_url or None,
                    connect_timeout=2,
                    read_timeout=5,
                    max_attempts=2,
                )
    return _client


def reset_client() -> None:
    global _client
    with _lock:
        _client = None


class QueueMessage(BaseModel):
    """What the notifications queue carries: ids only; the database is the source of truth."""

    id: UUID
    tenant_id: UUID


@dataclass(frozen=True, slots=True)
class Message:
    notification_id: UUID
    tenant_id: UUID
    delay_seconds: int = 0

    def body(self) -> str:
        return json.dumps({"id": str(self.notification_id), "tenant_id": str(self.tenant_id)})


@dataclass
class SendResult:
    sent: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)


def _send_chunk(queue_url: str, chunk: Sequence[Message]) -> SendResult:
    entries = [
        {
            "Id": str(i),
            "MessageBody": m.body(),
            "DelaySeconds": min(max(m.delay_seconds, 0), MAX_DELAY_SECONDS),
        }
        for i, m in enumerate(chunk)
    ]
    result = SendResult()
    client = get_sqs()
    try:
        reply = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
    except aws.AwsError as exc:
        logger.warning(
            "SendMessageBatch failed; rows stay pending for the sweeper", extra={"error": str(exc)}
        )
        result.failed.extend(m.notification_id for m in chunk)
        return result
    failed = {f["Id"] for f in reply.get("Failed", [])}
    for i, m in enumerate(chunk):
        (result.failed if str(i) in failed else result.sent).append(m.notification_id)
    if failed:
        logger.warning("SQS refused some entries", extra={"failed": reply.get("Failed")})
    return result


def send(messages: Sequence[Message], queue_url: str | None = None) -> SendResult:
    """Send in chunks of 10, the chunks concurrently. Never raises: what failed is returned."""
    url = queue_url or get_settings().notifications_queue_url
    chunks = [messages[i : i + SQS_BATCH] for i in range(0, len(messages), SQS_BATCH)]
    if not chunks:
        return SendResult()
    if not url:
        logger.error("NOTIFICATIONS_QUEUE_URL is not set; nothing can be enqueued")
        return SendResult(failed=[m.notification_id for m in messages])
    parts = (
        [_send_chunk(url, chunks[0])]
        if len(chunks) == 1
        else list(_pool.map(lambda c: _send_chunk(url, c), chunks))
    )
    total = SendResult()
    for part in parts:
        total.sent.extend(part.sent)
        total.failed.extend(part.failed)
    return total
