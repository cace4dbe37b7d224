"""The Liquid sandbox of the templates (python-liquid), apart from `templates` so that importing
the API does not import Liquid: it is loaded on the first render or syntax check.

Sandboxed: no `include`/`render` tags (no loader: a template reaches no file and no other template);
loop iterations, output size, context depth and local namespace bounded; undefined variables strict
when output or traversed, falsy in a condition, replaced by `| default:`. Email HTML alone is
autoescaped.
"""

from __future__ import annotations

import functools

from liquid import BoundTemplate, Environment
from liquid.exceptions import LiquidError, LiquidSyntaxError
from liquid.undefined import FalsyStrictUndefined


class _Undefined(FalsyStrictUndefined):
    """Strict when output or traversed; falsy in a condition, and `| default:` replaces it."""

    force_liquid_default = True
    allowed_properties = FalsyStrictUndefined.allowed_properties | {"force_liquid_default"}


class Sandbox(Environment):
    loop_iteration_limit = 10_000
    output_stream_limit = 1_000_000  # characters of one rendered part (an email's HTML at most)
    context_depth_limit = 30
    local_namespace_limit = 200_000  # bytes of values assigned inside the template
    block_nesting_limit = 30


def _environment(autoescape: bool) -> Sandbox:
    env = Sandbox(undefined=_Undefined, autoescape=autoescape, strict_filters=True)
    for tag in ("include", "render"):  # no loader, no other template: nothing to reach
        env.tags.pop(tag, None)
    return env


TEXT = _environment(autoescape=False)
HTML = _environment(autoescape=True)


@functools.lru_cache(maxsize=512)  # parsed templates per container (sources ≤ 100 kB each)
def compile_part(source: str, html: bool) -> BoundTemplate:
    """Parse once per container and source (LiquidSyntaxError when malformed)."""
    return (HTML if html else TEXT).from_string(source)


def syntax_error(exc: LiquidSyntaxError | LiquidError) -> str:
    where = exc.context()
    position = f"line {where[0]}, column {where[1] + 1}: " if where else ""
    return f"{position}{exc.message}"
