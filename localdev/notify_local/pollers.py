"""Lambda's SQS event source mapping, locally.

For each `SQS` event, `MaximumConcurrency` pollers (ScalingConfig; 2 when not set) each repeat:

1. gather a batch: long-poll ReceiveMessage (all attributes and message attributes, at most 10 per
   call) until `BatchSize` messages are in hand, or, once the first arrived, until
   `MaximumBatchingWindowInSeconds` has passed (0: the first non-empty receive is the batch);
2. invoke the function with the SQS event (`Records[]` as Lambda builds them);
3. delete what succeeded. The handler raised (or timed out, or returned something that is not
   JSON): nothing. ReportBatchItemFailures off: everything. On: everything except the records
   named in `batchItemFailures`; an empty or null list (or no response) is full success; an entry
   that is not `{"itemIdentifier": <a message id of this batch>}` makes the whole batch a failure.

Failed messages are left alone: they reappear when their visibility timeout ends, with
ApproximateReceiveCount one higher, and after `maxReceiveCount` receives the SQS service itself
moves them to the dead-letter queue (RedrivePolicy). The poller never changes visibility.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .invoker import Invocation, InvokeResult, Observer
from .lambda_env import sqs_event

log = logging.getLogger("notify_local")

MAX_RECEIVE = 10  # ReceiveMessage's MaxNumberOfMessages limit


@dataclass(frozen=True)
class SqsSource:
    """One `SQS` event of a function, resolved from the template."""

    function: str
    event_name: str
    queue_name: str
    queue_url: str
    queue_arn: str
    batch_size: int = 10
    batching_window: float = 0.0
    report_failures: bool = False
    max_concurrency: int = 2
    enabled: bool = True

    @property
    def label(self) -> str:
        return f"{self.function}/{self.event_name}"


@dataclass
class Decision:
    delete: list[str]
    failed: list[str]
    note: str = ""


def decide(message_ids: list[str], outcome: InvokeResult, report_failures: bool) -> Decision:
    """Which messages of a batch the event source mapping deletes, as Lambda decides it."""
    everything = Decision(delete=[], failed=list(message_ids))
    if not outcome.ok:
        everything.note = f"invocation failed ({type(outcome.error).__name__})"
        return everything
    if not report_failures:
        return Decision(delete=list(message_ids), failed=[])
    response = outcome.result
    if response is None or response == {}:
        return Decision(delete=list(message_ids), failed=[])
    if not isinstance(response, dict):
        everything.note = "invalid response (not a JSON object): whole batch failed"
        return everything
    items = response.get("batchItemFailures")
    if items is None or items == []:
        return Decision(delete=list(message_ids), failed=[])
    if not isinstance(items, list):
        everything.note = "batchItemFailures is not a list: whole batch failed"
        return everything
    known = set(message_ids)
    failed: set[str] = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or not identifier or identifier not in known:
            everything.note = f"malformed batchItemFailures entry {item!r}: whole batch failed"
            return everything
        failed.add(identifier)
    return Decision(
        delete=[m for m in message_ids if m not in failed], failed=[m for m in message_ids if m in failed]
    )


def build_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The SQS event for ReceiveMessage results (the shape lives in lambda_env.sqs_event)."""
    return sqs_event(messages, queue_arn)


class SqsPoller:
    """The pollers of one SQS event source; `start()` runs them in threads until `stop()`."""

    def __init__(
        self,
        source: SqsSource,
        sqs: Any,
        invoke: Callable[[str, dict[str, Any]], InvokeResult],
        *,
        poll_wait: int = 20,
        observers: list[Observer] | None = None,
    ) -> None:
        self.source = source
        self.sqs = sqs
        self.invoke = invoke
        self.poll_wait = max(0, min(20, int(poll_wait)))
        self.observers = observers if observers is not None else []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.source.max_concurrency):
            thread = threading.Thread(target=self._run, name=f"sqs-{self.source.label}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]

    # ------------------------------------------------------------------ one poller

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                batch = self.gather()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - an SQS outage must not end the poller
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning(
                        "[%s] ReceiveMessage on %s failed: %s",
                        self.source.function,
                        self.source.queue_name,
                        exc,
                    )
                self._stop.wait(min(5.0, 0.5 * failures))
                continue
            if batch:
                try:
                    self.process(batch)
                except Exception:  # the messages reappear after their visibility timeout
                    log.exception(
                        "[%s] handling a batch from %s failed", self.source.function, self.source.queue_name
                    )

    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        reply = self.sqs.receive_message(
            QueueUrl=self.source.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = reply.get("Messages", [])
        return messages

    def gather(self) -> list[dict[str, Any]]:
        source = self.source
        batch: list[dict[str, Any]] = []
        seen: set[str] = set()
        deadline: float | None = None
        while not self._stop.is_set():
            if deadline is None:
                wait = self.poll_wait
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(self.poll_wait, math.floor(remaining))
            messages = self._receive(min(MAX_RECEIVE, source.batch_size - len(batch)), wait)
            for message in messages:
                if message["MessageId"] not in seen:  # received again within the window: keep the newest
                    seen.add(message["MessageId"])
                    batch.append(message)
                else:
                    batch = [m for m in batch if m["MessageId"] != message["MessageId"]] + [message]
            if len(batch) >= source.batch_size or (batch and source.batching_window <= 0):
                break
            if batch and deadline is None:
                deadline = time.monotonic() + source.batching_window
            if deadline is not None and not messages and wait == 0:
                self._stop.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        return batch

    def process(self, batch: list[dict[str, Any]]) -> Invocation:
        source = self.source
        event = build_event(batch, source.queue_arn)
        outcome = self.invoke(source.function, event)
        ids = [m["MessageId"] for m in batch]
        decision = decide(ids, outcome, source.report_failures)
        handles = {m["MessageId"]: m["ReceiptHandle"] for m in batch}
        not_deleted = self._delete([handles[i] for i in decision.delete])
        note = f"; {decision.note}" if decision.note else ""
        if not_deleted:
            note += f"; {not_deleted} delete(s) failed (receipt expired?)"
        log.info(
            "[%s] batch of %d from %s -> %d failed, %d deleted%s (%s)",
            source.function,
            len(batch),
            source.queue_name,
            len(decision.failed),
            len(decision.delete),
            note,
            outcome.describe(),
        )
        invocation = Invocation(
            "sqs",
            source.queue_name,
            source.function,
            event,
            outcome,
            decision.delete,
            decision.failed,
            decision.note,
        )
        for observer in self.observers:
            observer(invocation)
        return invocation

    def _delete(self, receipt_handles: list[str]) -> int:
        failed = 0
        for start in range(0, len(receipt_handles), MAX_RECEIVE):
            chunk = receipt_handles[start : start + MAX_RECEIVE]
            try:
                reply = self.sqs.delete_message_batch(
                    QueueUrl=self.source.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(chunk)],
                )
            except Exception as exc:  # noqa: BLE001 - the messages reappear; that is the safe outcome
                log.warning("[%s] DeleteMessageBatch failed: %s", self.source.function, exc)
                failed += len(chunk)
                continue
            for entry in reply.get("Failed", []):
                failed += 1
                log.warning("[%s] could not delete a message: %s", self.source.function, entry.get("Message"))
        return failed
