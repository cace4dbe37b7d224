"""What Amazon SES and SNS share: a boto3 client per provider instance, and how botocore's errors map
onto the typed provider errors (the rules of ``base``, refined with AWS's error codes).

botocore raises ``ClientError`` for every error reply (``Error.Code`` and the HTTP status in its
``response``), and ``BotoCoreError`` subclasses for what happened on the way: ``ConnectTimeoutError`` /
``EndpointConnectionError`` (nothing sent), ``ReadTimeoutError`` / ``ConnectionClosedError`` (sent,
no answer: ambiguous), ``NoCredentialsError`` / ``NoRegionError`` (our configuration),
``ParamValidationError`` (the request could not be built from the payload).

Retries belong to the delivery engine: the client makes one HTTP attempt per send.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Self

from pydantic import StringConstraints, model_validator

from .. import clients
from ..config import get_settings
from ..models import Strict
from .base import (
    PermanentProviderError,
    ProviderError,
    Secret,
    TransientProviderError,
    answer_lost,
    classify_http_status,
    connect_failed,
    invalid_payload,
    not_configured,
    unexpected_error,
)

Region = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")]
AccessKeyId = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{16,128}$")]


class AwsCredentials(Strict):
    """An access key of the tenant's own AWS account, or nothing: then the sender's role (the
    deployment's account) sends."""

    access_key_id: AccessKeyId | None = None
    secret_access_key: Secret | None = None

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("give access_key_id and secret_access_key together, or neither")
        return self


THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "Throttled",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
    }
)
# Our credentials were refused: the provider's side, another config may work.
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "OptInRequired",
    }
)
# The account or our configuration of it cannot send now (an unverified sender, a paused account, a
# configuration set that does not exist, a KMS key we may not use): the provider's side.
CONFIG_CODES = frozenset(
    {
        "MailFromDomainNotVerified",
        "MailFromDomainNotVerifiedException",
        "ConfigurationSetDoesNotExist",
        "ConfigurationSetDoesNotExistException",
        "ConfigurationSetSendingPausedException",
        "AccountSendingPausedException",
        "KMSAccessDenied",
        "KMSDisabled",
        "KMSInvalidState",
        "KMSNotFound",
        "KMSOptInRequired",
        "InvalidSecurity",
    }
)


def classify_client_error(
    provider: str,
    code: str,
    message: str,
    status: int,
    *,
    recipient_codes: Mapping[str, str] | None = None,
    provider_codes: Mapping[str, str] | None = None,
) -> ProviderError:
    """An AWS error reply -> the typed error (pure). ``recipient_codes`` / ``provider_codes`` map a
    service's own codes onto this project's codes (SES ``MessageRejected`` ...)."""
    text = f"{provider} answered {code or 'an error'} (HTTP {status}): {message}"
    if code in (provider_codes or {}):
        return PermanentProviderError(
            text,
            (provider_codes or {})[code],
            provider=provider,
            status=status,
            provider_code=code,
            fault="provider",
        )
    if code in (recipient_codes or {}):
        return PermanentProviderError(
            text,
            (recipient_codes or {})[code],
            provider=provider,
            status=status,
            provider_code=code,
            fault="recipient",
        )
    if code in THROTTLING_CODES:
        return TransientProviderError(text, "throttled", provider=provider, status=status, provider_code=code)
    if code in TRANSIENT_CODES:
        return TransientProviderError(
            text, f"http_{status}", provider=provider, status=status, provider_code=code
        )
    if code in AUTH_CODES:
        return PermanentProviderError(text, "auth", provider=provider, status=status, provider_code=code)
    if code in CONFIG_CODES:
        return PermanentProviderError(
            text, "not_configured", provider=provider, status=status, provider_code=code
        )
    return classify_http_status(status or 400, text, provider=provider, provider_code=code or None)


def classify_boto_error(exc: BaseException, provider: str, **codes: Mapping[str, str]) -> ProviderError:
    """Any exception out of a botocore call -> the typed error."""
    from botocore import exceptions as boto

    if isinstance(exc, boto.ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return classify_client_error(
            provider, str(error.get("Code") or ""), str(error.get("Message") or ""), status, **codes
        )
    if isinstance(exc, boto.ConnectTimeoutError):
        return connect_failed(provider, exc, timed_out=True)
    if isinstance(exc, boto.EndpointConnectionError | boto.ProxyConnectionError | boto.SSLError):
        return connect_failed(provider, exc)
    if isinstance(exc, boto.ReadTimeoutError):
        return answer_lost(provider, exc, timed_out=True)
    if isinstance(exc, boto.ConnectionClosedError | boto.ConnectionError):
        return answer_lost(provider, exc)
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError | boto.NoRegionError):
        return not_configured(provider, str(exc))
    if isinstance(exc, boto.ParamValidationError):
        return invalid_payload(provider, exc)
    return unexpected_error(exc, provider=provider)


def boto_client(
    service: str,
    *,
    region: str,
    base_url: str,
    access_key_id: str,
    secret_access_key: str,
    connect_timeout: float,
    read_timeout: float,
) -> Any:
    """A client for one provider instance: the container's (``clients.aws_client``, the function's
    role and region) when the settings name no region, endpoint or keys of their own; else one built
    for them, through a session of its own (boto3's default session is not thread-safe)."""
    config: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "retries": {"total_max_attempts": 1, "mode": "standard"},  # the engine retries, not botocore
        "max_pool_connections": 100,  # SEND_CONCURRENCY is at most 100
    }
    if not (region or base_url or access_key_id):
        return clients.aws_client(service, **config)
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=access_key_id or None,
        aws_secret_access_key=secret_access_key or None,
        region_name=region or None,
    )
    endpoint = base_url or get_settings().aws_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    return session.client(service, endpoint_url=endpoint, config=Config(**config))  # type: ignore[call-overload]
