"""SQS transport. The notifications queue carries ids only; the database is the source of truth.

`QueueMessage` is the wire format, defined once: it writes every body (`body()`) and reads every
body (`QueueMessage.parse`). Sending goes through `send` (chunks of 10, concurrently); callers
that change a notification's state use `dispatch.enqueue`, the one enqueue path.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from . import aws, clients
from .config import get_settings
from .observability import logger

SQS_BATCH = 10  # SendMessageBatch's limit
MAX_DELAY_SECONDS = 900  # SQS's DelaySeconds limit (15 minutes)


class QueueMessage(BaseModel):
    """What the notifications queue carries: ids only."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    tenant_id: UUID
    # When the row's first message was sent (epoch seconds), on a message the sender put back
    # because its row was not visible yet: the window for the row to appear counts from then, not
    # from each put-back copy's own SentTimestamp (which would renew it for ever).
    first_sent_at: float | None = None

    def body(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def parse(cls, body: str | bytes) -> QueueMessage:
        """Read a message body; raises pydantic's ValidationError for anything else."""
        return cls.model_validate_json(body)


@dataclass(frozen=True, slots=True)
class Outgoing:
    message: QueueMessage
    delay_seconds: int = 0


@dataclass
class SendResult:
    sent: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)


def get_sqs() -> Any:
    """The container's SQS client (clients.aws_client: notify_core.aws, boto3's calls without its
    ~165 ms import on the first request that enqueues)."""
    return clients.aws_client("sqs")


def _chunk_pool() -> ThreadPoolExecutor:
    return clients.get(
        "sqs-pool",
        lambda: ThreadPoolExecutor(max_workers=10, thread_name_prefix="sqs"),
        lambda pool: pool.shutdown(wait=False),
    )


def _send_chunk(queue_url: str, chunk: Sequence[Outgoing]) -> SendResult:
    entries = [
        {
            "Id": str(i),
            "MessageBody": m.message.body(),
            "DelaySeconds": min(max(m.delay_seconds, 0), MAX_DELAY_SECONDS),
        }
        for i, m in enumerate(chunk)
    ]
    result = SendResult()
    client = get_sqs()
    try:
        reply = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
    except aws.AwsError as exc:
        logger.warning("SendMessageBatch failed", extra={"error": str(exc), "count": len(chunk)})
        result.failed.extend(m.message.id for m in chunk)
        return result
    failed = {f["Id"] for f in reply.get("Failed", [])}
    for i, m in enumerate(chunk):
        (result.failed if str(i) in failed else result.sent).append(m.message.id)
    if failed:
        logger.warning("SQS refused some entries", extra={"failed": reply.get("Failed")})
    return result


def send(messages: Sequence[Outgoing], queue_url: str | None = None) -> SendResult:
    """Send in chunks of 10, the chunks concurrently. Never raises: what failed is returned."""
    url = queue_url or get_settings().notifications_queue_url
    chunks = [messages[i : i + SQS_BATCH] for i in range(0, len(messages), SQS_BATCH)]
    if not chunks:
        return SendResult()
    if not url:
        logger.error("NOTIFICATIONS_QUEUE_URL is not set; nothing can be enqueued")
        return SendResult(failed=[m.message.id for m in messages])
    parts = (
        [_send_chunk(url, chunks[0])]
        if len(chunks) == 1
        else list(_chunk_pool().map(lambda c: _send_chunk(url, c), chunks))
    )
    total = SendResult()
    for part in parts:
        total.sent.extend(part.sent)
        total.failed.extend(part.failed)
    return total


def queue_attributes(queue_url: str | None = None) -> dict[str, Any]:
    """VisibilityTimeout, DelaySeconds and the redrive policy of the queue (for the sweeper)."""
    url = queue_url or get_settings().notifications_queue_url
    reply = get_sqs().get_queue_attributes(
        QueueUrl=url, AttributeNames=["VisibilityTimeout", "DelaySeconds", "RedrivePolicy"]
    )
    return dict(reply.get("Attributes", {}))
