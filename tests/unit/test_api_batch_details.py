"""How the batch create names a failed item's errors (the API handler's helper, no services)."""

from __future__ import annotations

from notify_core.errors import Conflict, ValidationFailed
from notify_local.lambda_env import load_module


def test_an_item_error_without_field_details_is_named_by_the_item() -> None:
    details = load_module("functions/api/", "app")._item_details
    assert details(2, Conflict("the idempotency key is in use; retry")) == [
        {"field": "notifications[2]", "message": "the idempotency key is in use; retry"}
    ]


def test_an_item_errors_fields_are_prefixed_with_the_item() -> None:
    details = load_module("functions/api/", "app")._item_details
    error = ValidationFailed("bad", [{"field": "payload.to", "message": "required"}, {"message": "whole"}])
    assert details(0, error) == [
        {"field": "notifications[0].payload.to", "message": "required"},
        {"field": "notifications[0]", "message": "whole"},
    ]
