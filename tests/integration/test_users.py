from __future__ import annotations

import uuid

from .conftest import Api, Tenant


def test_user_lifecycle(api: Api) -> None:
    # Given a new recipient
    created = api(
        "POST",
        "/api/v1/users",
        {
            "email": "ada@example.com",
            "phone": "+14155550100",
            "push_tokens": ["tok-1"],
            "username": "ada",
            "external_id": "crm-1",
            "locale": "en-GB",
            "timezone": "Europe/London",
        },
    )
    assert created.status == 201, created.raw
    user = created.json
    assert user["email"] == "ada@example.com" and user["push_tokens"] == ["tok-1"]

    # When it is read, patched (a null clears a field) and deleted
    assert api("GET", f"/api/v1/users/{user['id']}").json == user
    patched = api("PATCH", f"/api/v1/users/{user['id']}", {"phone": None, "locale": "fr"})
    assert patched.status == 200
    assert patched.json["phone"] is None and patched.json["locale"] == "fr"
    assert patched.json["email"] == "ada@example.com"
    assert api("DELETE", f"/api/v1/users/{user['id']}").status == 204

    # Then it is gone
    gone = api("GET", f"/api/v1/users/{user['id']}")
    assert gone.status == 404 and gone.error["code"] == "not_found"


def test_user_validation_names_every_bad_field(api: Api) -> None:
    reply = api(
        "POST",
        "/api/v1/users",
        {
            "email": "not-an-email",
            "phone": "0415",
            "timezone": "Mars/Olympus",
            "push_tokens": [""],
            "bogus": 1,
        },
    )
    assert reply.status == 422
    assert reply.error["code"] == "validation_error"
    fields = {d["field"] for d in reply.error["details"]}
    assert fields == {"email", "phone", "timezone", "push_tokens[0]", "bogus"}


def test_external_id_is_unique_per_tenant(api: Api, make_tenant, make_api) -> None:
    assert api("POST", "/api/v1/users", {"external_id": "x-1"}).status == 201
    dup = api("POST", "/api/v1/users", {"external_id": "x-1"})
    assert dup.status == 409 and dup.error["code"] == "conflict"
    # another tenant may use the same external id
    other = make_api(make_tenant("other").key)
    assert other("POST", "/api/v1/users", {"external_id": "x-1"}).status == 201


def test_other_tenants_users_are_invisible(api: Api, make_tenant: object, make_api) -> None:
    user = api("POST", "/api/v1/users", {"email": "a@example.com"}).json
    other: Api = make_api(make_tenant("other").key)  # type: ignore[operator]
    for method, body in (("GET", None), ("PATCH", {"locale": "de"}), ("DELETE", None)):
        reply = other(method, f"/api/v1/users/{user['id']}", body)
        assert reply.status == 404, (method, reply.raw)
    assert api("GET", f"/api/v1/users/{user['id']}").json["locale"] is None


def test_bad_uuid_in_path_is_422(api: Api, tenant: Tenant) -> None:
    reply = api("GET", "/api/v1/users/not-a-uuid")
    assert reply.status == 422
    assert reply.error["details"] == [{"field": "id", "message": reply.error["details"][0]["message"]}]
    assert api("GET", f"/api/v1/users/{uuid.uuid4()}").status == 404
