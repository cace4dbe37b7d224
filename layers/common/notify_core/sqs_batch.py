"""The edge the two whole-batch SQS functions share (the sender and the webhook dispatcher).

Powertools' BatchProcessor calls a record handler per record; these functions instead hand the whole
batch to the domain at once (one claim, concurrent sends, one record of the outcomes). `QueueBatch`
parses each record once with `QueueRecord` (the queues' wire format, `queue.QueueMessage`, as the
body), reports the records that do not parse through the processor's own failure path (SQS redrives
them), and owns this execution environment's thread pool: sized by a setting, rebuilt when the
setting changes (tests and benchmarks change it between invocations), never shared with another
copy of the function (the local runtime runs several copies in one process).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import Json, ValidationError

from .queue import QueueMessage


class QueueRecord(SqsRecordModel):
    body: Json[QueueMessage]  # the queues' wire format (notify_core.queue.QueueMessage)


class QueueBatch(BatchProcessor):
    def __init__(self, pool_size: Callable[[], int], thread_name_prefix: str) -> None:
        super().__init__(EventType.SQS, model=QueueRecord, raise_on_entire_batch_failure=False)
        self._pool_size = pool_size
        self._thread_name_prefix = thread_name_prefix
        self._pool: ThreadPoolExecutor | None = None

    def pool(self) -> ThreadPoolExecutor:
        """This execution environment's threads: `pool_size()` of them, created once (and again only
        if the setting changed)."""
        size = self._pool_size()
        if self._pool is None or self._pool._max_workers != size:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=self._thread_name_prefix)
        return self._pool

    def parse(self) -> tuple[list[tuple[Any, ...]], list[QueueRecord]]:
        """(the failure results of the records that do not parse, the records that do), in order."""
        refused: list[tuple[Any, ...]] = []
        parsed: list[QueueRecord] = []
        for record in self.records:
            try:
                parsed.append(QueueRecord.model_validate(record))
            except ValidationError:
                refused.append(self._register_model_validation_error_record(record))
        return refused, parsed
