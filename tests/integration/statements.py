"""Counting the SQL statements a piece of code issues: every psycopg cursor execute (pipeline mode
included) is recorded with its text, whatever connection or thread it runs on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg


class Statements(list[str]):
    def starting(self, prefix: str) -> list[str]:
        return [s for s in self if s.lstrip().startswith(prefix)]


@contextmanager
def recorded() -> Iterator[Statements]:
    seen = Statements()
    lock = threading.Lock()
    original = psycopg.Cursor.execute

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        text = query.as_string(self) if hasattr(query, "as_string") else str(query)
        if text.strip():  # the pool's liveness check sends an empty query: not a statement
            with lock:
                seen.append(text)
        return original(self, query, *args, **kwargs)

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        psycopg.Cursor.execute = original  # type: ignore[method-assign]
