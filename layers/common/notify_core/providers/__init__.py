"""Providers: one class per provider behind one interface (``Provider.send`` -> ``Receipt``).

``PROVIDERS`` is the registry: a plain mapping of classes, so "which providers exist" is one grep.
Each class states its ``name`` and the ``channels`` it serves; nothing else lists them. A class
imports its SDK only when it is instantiated (``get_provider``), never when this package is.

``get_provider(name)`` builds a provider on first use and keeps it for the life of the container
(``clients``). Settings are read from the environment (and ``PROVIDER_SECRETS_ARN``) then.

Only ``TransientProviderError`` and ``PermanentProviderError`` come out of ``send``: the rules are
in ``base``'s docstring.
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import clients
from .base import (
    OutgoingMessage,
    Payload,
    PermanentProviderError,
    Provider,
    ProviderError,
    ProviderSettings,
    ProviderSettingsError,
    Receipt,
    TransientProviderError,
)
from .console import ConsoleProvider
from .fcm import FcmProvider
from .sendgrid import SendGridProvider
from .ses import SesProvider
from .sns import SnsProvider
from .twilio import TwilioProvider

__all__ = [
    "PROVIDERS",
    "PROVIDER_NAMES",
    "OutgoingMessage",
    "Payload",
    "PermanentProviderError",
    "Provider",
    "ProviderError",
    "ProviderSettings",
    "Receipt",
    "TransientProviderError",
    "get_provider",
    "reset_providers",
    "serves",
    "warm",
]

PROVIDERS: dict[str, type[Provider]] = {
    cls.name: cls
    for cls in (SendGridProvider, TwilioProvider, FcmProvider, ConsoleProvider, SesProvider, SnsProvider)
}
PROVIDER_NAMES = frozenset(PROVIDERS)


def serves(provider: str, channel: str) -> bool:
    cls = PROVIDERS.get(provider)
    return cls is not None and channel in cls.channels


def _build(name: str) -> Provider:
    try:
        settings = ProviderSettings.from_env()
    except ProviderSettingsError as exc:
        raise PermanentProviderError(str(exc), "not_configured", provider=name) from exc
    try:
        return PROVIDERS[name](settings)  # type: ignore[call-arg]
    except ImportError as exc:
        raise PermanentProviderError(
            f"the {name} SDK is not installed ({exc}); see layers/common/requirements.txt",
            "not_configured",
            provider=name,
        ) from exc


def _close(provider: Provider) -> None:
    close = getattr(provider, "close", None)
    if callable(close):
        close()


def get_provider(name: str) -> Provider:
    """The provider called ``name``, built on first use and cached per container (thread-safe).

    Raises ``PermanentProviderError`` for an unknown name, malformed settings or a missing SDK, and
    whatever typed error fetching the provider secret raised. A failed build is not cached.
    Missing credentials do not fail here: ``send`` raises ``not_configured``.
    """
    if name not in PROVIDERS:
        raise PermanentProviderError(
            f"unknown provider {name!r} (known: {', '.join(sorted(PROVIDERS))})", "unknown_provider"
        )
    return clients.get(f"provider:{name}", lambda: _build(name), _close)


def warm(names: str | Iterable[str]) -> list[str]:
    """Build the named providers now (a function's init phase), so that the first batch does not
    pay for the provider secret and the SDK import. Best effort: a provider that cannot be built
    is skipped and logged, and its first use tries again. Returns the names built."""
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    built = []
    for name in wanted:
        try:
            get_provider(name)
        except ProviderError as exc:
            from ..observability import logger

            logger.warning("provider not prepared at init", extra={"provider": name, "error": str(exc)})
            continue
        built.append(name)
    return built


def reset_providers() -> None:
    """Forget cached providers (closing those that hold resources) and the cached provider secret,
    so the next ``get_provider`` reads the current environment. For tests and the local runtime."""
    for name in PROVIDERS:
        clients.forget(f"provider:{name}")
    from .base import forget_secrets

    forget_secrets()
