"""Test session set-up shared by every tier.

Integration tests talk to a real PostgreSQL, Redis and SQS API. The services are found or started
once, in the pytest controller process (before xdist starts its workers, which inherit the
endpoints through the environment); each worker then gets its own database, Redis key prefix and
queues, so runs and workers never see each other's rows or messages.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

if os.environ.get("NOTIFY_LAYER"):  # `make test-layer`: the built layer instead of the venv
    from tests.layer_guard import install

    install(os.environ["NOTIFY_LAYER"])

from notify_local.stack import LOCAL_AWS_ENV

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NOTIFY_TEST_RUN", uuid.uuid4().hex[:8])
# Nothing in a test run may reach a real AWS account.
os.environ.update(LOCAL_AWS_ENV)
os.environ.update(
    POWERTOOLS_TRACE_DISABLED="1",
    POWERTOOLS_METRICS_NAMESPACE="NotificationPlatformTest",
    POWERTOOLS_LOG_LEVEL=os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
)
os.environ.pop("AWS_PROFILE", None)


def _wants_integration(config: pytest.Config) -> bool:
    args = [str(a) for a in config.args] or ["tests"]
    marker = config.getoption("-m") or ""
    if "not integration" in marker:
        return False
    return any("unit" not in Path(a.split("::")[0]).parts for a in args)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("NOTIFY_TEST_SQS"):
        return
    if not _wants_integration(config):
        return
    from notify_local import services

    state = ROOT / ".local"
    pg = services.ensure_postgres(os.environ.get("TEST_DATABASE_URL"), state)
    redis_url = services.ensure_redis(os.environ.get("TEST_REDIS_URL"), state)
    sqs = services.ensure_sqs(os.environ.get("TEST_SQS_ENDPOINT"), state)
    if os.environ.get("NOTIFY_TEST_PGBOUNCER") == "1":
        # `make test-pgbouncer`: the functions reach PostgreSQL through PgBouncer in transaction
        # pooling (databases are still created and dropped directly).
        os.environ["NOTIFY_TEST_POOLER"] = services.ensure_pgbouncer(pg, state)
    os.environ.update(NOTIFY_TEST_PG=pg, NOTIFY_TEST_REDIS=redis_url, NOTIFY_TEST_SQS=sqs.endpoint_url)
    os.environ["NOTIFY_TEST_SQS_KIND"] = sqs.kind
    config.stash[_SQS] = sqs
    _ses_sns(config, sqs)


_SQS = pytest.StashKey["object"]()
_SES_SNS = pytest.StashKey["object"]()


def _localstack_serves(endpoint: str, names: tuple[str, ...]) -> bool:
    """Whether the LocalStack at `endpoint` runs these services (its SERVICES may leave them out)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=3) as reply:
            states = json.load(reply).get("services", {})
    except (OSError, ValueError):
        return False
    return all(states.get(name) not in (None, "disabled") for name in names)


def _ses_sns(config: pytest.Config, sqs: object) -> None:
    """Where the SES and SNS providers are tested: TEST_SES_SNS_ENDPOINT, else the SQS endpoint's
    LocalStack when it runs ses and sns (or moto's server, which serves both), else a moto server
    started for this run (a LocalStack shared with others may have been started without them)."""
    endpoint = os.environ.get("TEST_SES_SNS_ENDPOINT") or ""
    kind = getattr(sqs, "kind", "")
    if endpoint:
        kind = "localstack" if _localstack_serves(endpoint, ("ses", "sns")) else "moto"
    elif kind == "moto":
        endpoint = str(getattr(sqs, "endpoint_url", ""))
    elif _localstack_serves(str(getattr(sqs, "endpoint_url", "")), ("ses", "sns")):
        endpoint, kind = str(getattr(sqs, "endpoint_url", "")), "localstack"
    else:
        from notify_local import services

        moto = services.start_moto()
        config.stash[_SES_SNS] = moto
        endpoint, kind = moto.endpoint_url, "moto"
    os.environ.update(NOTIFY_TEST_SES_SNS=endpoint, NOTIFY_TEST_SES_SNS_KIND=kind)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not os.environ.get("NOTIFY_TEST_SQS"):
        return ["services: none (unit tests only)"]
    kind = os.environ.get("NOTIFY_TEST_SQS_KIND")
    note = " — moto's server, because Python 3.13 / LocalStack is absent" if kind == "moto" else ""
    pooler = os.environ.get("NOTIFY_TEST_POOLER")
    layer = os.environ.get("NOTIFY_LAYER")
    ses_note = (
        " — moto's server: the LocalStack found runs without ses/sns"
        if os.environ.get("NOTIFY_TEST_SES_SNS_KIND") == "moto" and kind != "moto"
        else ""
    )
    return [
        f"postgres: {os.environ['NOTIFY_TEST_PG']}"
        + (f" through PgBouncer (transaction pooling) at {pooler}" if pooler else ""),
        *([f"code: the built layer {layer}"] if layer else []),
        f"redis: {os.environ['NOTIFY_TEST_REDIS']}",
        f"sqs: {os.environ['NOTIFY_TEST_SQS']} ({kind}){note}",
        f"ses/sns: {os.environ.get('NOTIFY_TEST_SES_SNS')} ({os.environ.get('NOTIFY_TEST_SES_SNS_KIND')}){ses_note}",
    ]


def pytest_unconfigure(config: pytest.Config) -> None:
    ses_sns = config.stash.get(_SES_SNS, None)
    if ses_sns is not None:
        ses_sns.stop()  # type: ignore[attr-defined]
    sqs = config.stash.get(_SQS, None)
    if sqs is not None and getattr(sqs, "kind", "") in ("moto", "localstack"):
        sqs.stop()  # type: ignore[attr-defined]  # what this run started, it stops
