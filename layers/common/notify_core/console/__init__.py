"""The operator console (issue 14): static files served by the API function at `/console`.

Plain HTML, CSS and JavaScript modules in `static/` (no build step), shipped inside this package, so
that `make build` puts them in the layer and the local runtime serves the same files. The page calls
the API with the key a person types (kept in sessionStorage, sent as X-Api-Key; no cookies). Nothing
loads from elsewhere: the policy allows only this origin, no inline script or style, no framing.

The chart library, uPlot, is vendored as shipped on npm (`static/uplot.*`, MIT, its LICENSE beside
it); UPLOT_VERSION says which release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
UPLOT_VERSION = "1.6.32"

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9]+)*\.(js|css|svg|txt)")


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    content_type: str
    body: str


def _load(path: Path) -> Asset:
    body = path.read_text(encoding="utf-8")
    return Asset(path.name, CONTENT_TYPES.get(path.suffix, "text/html; charset=utf-8"), body)


@cache
def page() -> Asset:
    """The console's one HTML page."""
    return _load(STATIC / "index.html")


@cache
def asset(name: str) -> Asset | None:
    """A static file by its name (one path segment: no folders, nothing outside `static/`), or None."""
    if len(name) > 100 or not _NAME.fullmatch(name):
        return None
    path = STATIC / name
    if not path.is_file():
        return None
    return _load(path)


def names() -> list[str]:
    """Every file the console serves (index.html is the page itself)."""
    return sorted(p.name for p in STATIC.iterdir() if p.is_file() and _NAME.fullmatch(p.name))
