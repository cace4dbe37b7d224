"""Idempotent creates: Powertools' Idempotency utility over a PostgreSQL persistence layer.

Every POST that creates something (templates, messages, webhooks, API keys, provider configs, ...)
runs its domain call through `create_once`: the same `Idempotency-Key` with the same body within
IDEMPOTENCY_WINDOW_HOURS returns the first reply again (status 200, as the contract says for
replays); the same key with another body is a 409 `idempotency_mismatch`; a key whose first request
is still running is a 409 `conflict`. Keys are per tenant and per route. (Notifications keep their
own key column, written in the notification's INSERT, because ingest is the hot path.)

Powertools' idempotency package imports its DynamoDB layer, and with it boto3 (~90 ms of CPU from
the runtime's copy), whichever part is asked for; so it is loaded on the first create that carries
a key (`_powertools`), not when the API function starts: a create without a key never needs it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .config import get_settings
from .db import transaction
from .errors import Conflict, DatabaseUnavailable, IdempotencyMismatch, ServiceUnavailable

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

COLUMNS = "id, expiration, in_progress_expiration, status, data, validation"


@functools.cache
def _persistence() -> BasePersistenceLayer:
    """The persistence layer, its class defined on first use (see the module's docstring)."""
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyItemAlreadyExistsError,
        IdempotencyItemNotFoundError,
    )
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

    class PostgresPersistenceLayer(BasePersistenceLayer):
        """Idempotency records in the `idempotency_records` table, through the container's pool."""

        def _get_record(self, idempotency_key: str) -> DataRecord:
            with transaction() as conn:
                row = conn.execute(
                    f"SELECT {COLUMNS} FROM idempotency_records WHERE id = %s", (idempotency_key,)
                ).fetchone()
            if row is None:
                raise IdempotencyItemNotFoundError
            return _record(row)

        def _put_record(self, data_record: DataRecord) -> None:
            """Insert, or take over a record that expired or whose first request died in progress."""
            now = time.time()
            with transaction() as conn:
                taken = conn.execute(
                    "INSERT INTO idempotency_records AS r (id, expiration, in_progress_expiration, status, validation)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO UPDATE SET expiration = excluded.expiration,"
                    " in_progress_expiration = excluded.in_progress_expiration, status = excluded.status,"
                    " validation = excluded.validation, data = NULL"
                    " WHERE r.expiration < %s"
                    " OR (r.status = 'INPROGRESS' AND r.in_progress_expiration < %s)"
                    " RETURNING id",
                    (
                        data_record.idempotency_key,
                        data_record.expiry_timestamp,
                        data_record.in_progress_expiry_timestamp,
                        data_record.status,
                        data_record.payload_hash or None,
                        int(now),
                        int(now * 1000),
                    ),
                ).fetchone()
                if taken is None:
                    row = conn.execute(
                        f"SELECT {COLUMNS} FROM idempotency_records WHERE id = %s",
                        (data_record.idempotency_key,),
                    ).fetchone()
            if taken is None:
                old = _record(row) if row else None
                if old is not None:  # handing the record back skips Powertools' own check: do it here
                    self._validate_payload(data_payload=data_record, stored_data_record=old)
                raise IdempotencyItemAlreadyExistsError(old_data_record=old)

        def _update_record(self, data_record: DataRecord) -> None:
            with transaction() as conn:
                conn.execute(
                    "UPDATE idempotency_records SET data = %s, status = %s, expiration = %s WHERE id = %s",
                    (
                        data_record.response_data,
                        data_record.status,
                        data_record.expiry_timestamp,
                        data_record.idempotency_key,
                    ),
                )

        def _delete_record(self, data_record: DataRecord) -> None:
            with transaction() as conn:
                conn.execute("DELETE FROM idempotency_records WHERE id = %s", (data_record.idempotency_key,))

    return PostgresPersistenceLayer()


def _record(row: Mapping[str, Any]) -> DataRecord:
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

    return DataRecord(
        idempotency_key=row["id"],
        status=row["status"],
        expiry_timestamp=row["expiration"],
        in_progress_expiry_timestamp=row["in_progress_expiration"],
        response_data=row["data"] or "",
        payload_hash=row["validation"] or "",
    )


@dataclass(frozen=True, slots=True)
class Created:
    """A create's reply: its status code and JSON body, as stored for replays."""

    status: int
    body: Any
    replayed: bool = False


def _mark_replay(response: Any, idempotent_data: DataRecord) -> Any:
    return {**response, "replayed": True}


class _RequestTime:
    """How long a first request may stay in progress before its key is free again: the API
    function's timeout (a create that crashed does not block its key for the whole window)."""

    def get_remaining_time_in_millis(self) -> int:
        return IN_PROGRESS_MS


IN_PROGRESS_MS = 30_000


def _config() -> IdempotencyConfig:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    window = timedelta(hours=get_settings().idempotency_window_hours)
    return IdempotencyConfig(
        event_key_jmespath="[tenant, route, key]",
        payload_validation_jmespath="body",
        expires_after_seconds=int(window.total_seconds()),
        response_hook=_mark_replay,
        raise_on_no_idempotency_key=True,
        lambda_context=_RequestTime(),  # type: ignore[arg-type]
    )


def _run(request: dict[str, Any], create: Callable[[], Created]) -> dict[str, Any]:
    created = create()
    return {"status": created.status, "body": created.body}


def create_once(
    *, tenant_id: UUID, route: str, key: str | None, body: Any, create: Callable[[], Created]
) -> Created:
    """Run `create` once per (tenant, route, key) and body; without a key, just run it."""
    if not key:
        return create()
    from aws_lambda_powertools.utilities.idempotency import idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    once = idempotent_function(
        data_keyword_argument="request", persistence_store=_persistence(), config=_config()
    )(_run)
    request = {"tenant": str(tenant_id), "route": route, "key": key, "body": body}
    try:
        reply = once(request=request, create=create)
    except IdempotencyValidationError as exc:
        raise IdempotencyMismatch(
            "this idempotency key was used with a different request body",
            [{"field": "idempotency_key", "message": "already used with a different request body"}],
        ) from exc
    except IdempotencyAlreadyInProgressError as exc:
        raise Conflict("a request with this idempotency key is still in progress; retry shortly") from exc
    except IdempotencyPersistenceLayerError as exc:
        cause = exc.__cause__
        if isinstance(cause, DatabaseUnavailable):
            raise cause from exc
        raise ServiceUnavailable(
            "the idempotency store is unavailable; retry shortly", retry_after=5
        ) from exc
    if reply.get("replayed"):
        return Created(200, reply["body"], replayed=True)
    return Created(int(reply["status"]), reply["body"])
