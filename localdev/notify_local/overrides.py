"""The local overrides file (`local.env` at the repository root; `local.env.example` documents it).

One `KEY=VALUE` per line; blank lines and `#` comments are ignored; a value may be wrapped in single
or double quotes (kept verbatim inside them); `export KEY=VALUE` is accepted so the file can be
sourced by a shell. What a key means depends on its name:

* a template parameter name (CamelCase: `RateLimitRequests`, `MaxReceiveCount`, `LogLevel`,
  `DatabaseUrl`, `RedisUrl`, ...) overrides that parameter, as `sam deploy --parameter-overrides`;
* an UPPER_CASE name is an extra environment variable for every function, set after (and so
  winning over) what the template gives; `AWS_ENDPOINT_URL` also chooses the SQS endpoint.

`DATABASE_URL` and `REDIS_URL` are refused: the template's `DatabaseUrl` / `RedisUrl` parameters
say it, once. Standard library only: LocalStack's init hook (localstack/init/ready.d) imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_KEY = re.compile(r"^[A-Z_][A-Z0-9_]*$")
REFUSED = {"DATABASE_URL": "DatabaseUrl", "REDIS_URL": "RedisUrl"}


class OverridesError(ValueError):
    """The overrides file (or a --param) says something the runtime cannot use."""


@dataclass
class Overrides:
    parameters: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)


def parse_pairs(lines: Iterable[str], source: str = "local.env") -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _KEY.match(key):
            raise OverridesError(f"{source}:{number}: expected KEY=VALUE, got {raw.strip()!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()  # a trailing comment after an unquoted value
        pairs.append((key, value))
    return pairs


def classify(pairs: Iterable[tuple[str, str]], parameters: Iterable[str], source: str) -> Overrides:
    """Split pairs into template parameters and environment variables (see the module doc)."""
    known = set(parameters)
    out = Overrides()
    for key, value in pairs:
        if key in REFUSED:
            raise OverridesError(
                f"{source}: {key} is not read here; set the template parameter {REFUSED[key]}"
            )
        if key in known:
            out.parameters[key] = value
        elif _ENV_KEY.match(key):
            out.environment[key] = value
        else:
            raise OverridesError(
                f"{source}: {key!r} is neither a template parameter nor an UPPER_CASE environment variable "
                f"(parameters: {', '.join(sorted(known))})"
            )
    return out


def read_overrides(path: Path, parameters: Iterable[str]) -> Overrides:
    """Read `path` (missing file: no overrides)."""
    if not path.exists():
        return Overrides()
    return classify(
        parse_pairs(path.read_text(encoding="utf-8").splitlines(), str(path)), parameters, str(path)
    )
