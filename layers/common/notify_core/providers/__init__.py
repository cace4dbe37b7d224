"""Providers: one module per provider behind one interface (``Provider.send`` -> ``Receipt``).

``get_provider(name)`` builds a provider on first use and keeps it for the life of the process
(container). Settings are read from the environment (and ``PROVIDER_SECRETS_ARN``) when a provider
is built; its SDK is imported then too, never when this package is imported.

Only ``TransientProviderError`` and ``PermanentProviderError`` come out of ``send``: the rules are
in ``base``'s docstring.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable
from typing import Any

from .base import (
    OutgoingMessage,
    PermanentProviderError,
    Provider,
    ProviderError,
    ProviderSettings,
    ProviderSettingsError,
    Receipt,
    TransientProviderError,
    forget_secrets,
)

__all__ = [
    "PROVIDER_NAMES",
    "OutgoingMessage",
    "PermanentProviderError",
    "Provider",
    "ProviderError",
    "ProviderSettings",
    "Receipt",
    "TransientProviderError",
    "get_provider",
    "reset_providers",
    "warm",
]

# name -> (module, class); the module imports its SDK only inside the class's constructor.
_REGISTRY: dict[str, tuple[str, str]] = {
    "sendgrid": ("notify_core.providers.sendgrid", "SendGridProvider"),
    "twilio": ("notify_core.providers.twilio", "TwilioProvider"),
    "fcm": ("notify_core.providers.fcm", "FcmProvider"),
    "console": ("notify_core.providers.console", "ConsoleProvider"),
}
PROVIDER_NAMES = frozenset(_REGISTRY)

_providers: dict[str, Provider] = {}
_lock = threading.Lock()


def _build(name: str) -> Provider:
    module_name, class_name = _REGISTRY[name]
    try:
        settings = ProviderSettings.from_env()
    except ProviderSettingsError as exc:
        raise PermanentProviderError(str(exc), "not_configured", provider=name) from exc
    try:
        cls: Any = getattr(importlib.import_module(module_name), class_name)
        provider: Provider = cls(settings)
    except ImportError as exc:
        raise PermanentProviderError(
            f"the {name} SDK is not installed ({exc}); see layers/common/requirements.txt",
            "not_configured",
            provider=name,
        ) from exc
    return provider


def get_provider(name: str) -> Provider:
    """The provider called ``name``, built on first use and cached per process (thread-safe).

    Raises ``PermanentProviderError`` for an unknown name, malformed settings or a missing SDK, and
    whatever typed error fetching the provider secret raised. A failed build is not cached.
    Missing credentials do not fail here: ``send`` raises ``not_configured``.
    """
    provider = _providers.get(name)
    if provider is not None:
        return provider
    if name not in _REGISTRY:
        raise PermanentProviderError(
            f"unknown provider {name!r} (known: {', '.join(sorted(_REGISTRY))})", "unknown_provider"
        )
    with _lock:
        provider = _providers.get(name)
        if provider is None:
            provider = _build(name)
            _providers[name] = provider
    return provider


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
    with _lock:
        providers = list(_providers.values())
        _providers.clear()
        forget_secrets()
    for provider in providers:
        close = getattr(provider, "close", None)
        if callable(close):
            close()
