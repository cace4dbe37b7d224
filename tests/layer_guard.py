"""Run the tests against the built layer instead of the dev venv (`make test-layer`).

With ``NOTIFY_LAYER=.aws-sam/build/CommonLayer/python`` (and the same folder first on PYTHONPATH, so
that it wins over the venv from the first import on), every package the layer ships, notify_core
included, is imported from the layer, as on Lambda. The venv still provides what a test itself
needs (pytest, moto, the local runtime) and what the Lambda runtime provides (boto3, botocore).

The guard makes a missing dependency fail as it would on Lambda: when code *inside the layer*
imports a top-level package that is neither in the layer, nor in the standard library, nor one of
the runtime's own packages, the import raises ModuleNotFoundError instead of quietly falling back to
the venv's copy. So a test that passes here passes with the layer as it ships (build_layer.py's
excluded.txt removals included).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# What the python3.12 Lambda runtime has on sys.path besides the standard library.
RUNTIME_PACKAGES = frozenset({"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3"})


def top_level_names(layer: Path) -> frozenset[str]:
    names = set()
    for entry in layer.iterdir():
        if entry.name.endswith((".dist-info", ".data")) or entry.name == "__pycache__":
            continue
        names.add(entry.name.split(".", 1)[0])  # package folder, module.py, extension .so
    return frozenset(names)


def _importer(layer_prefix: str) -> str | None:
    """The file of the first frame outside the import machinery, when it lies in the layer."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith("<frozen importlib") or filename.endswith(("importlib/__init__.py",)):
            frame = frame.f_back  # type: ignore[assignment]
            continue
        return filename if filename.startswith(layer_prefix) else None
    return None


class LayerGuard(importlib.abc.MetaPathFinder):
    def __init__(self, layer: Path) -> None:
        self.layer = layer
        self.names = top_level_names(layer)
        # Code objects in the built layer name their files /opt/python/... (build_layer.py).
        self.prefixes = (str(layer) + os.sep, "/opt/python/")

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top in self.names or top in RUNTIME_PACKAGES or top in sys.stdlib_module_names:
            return None
        for prefix in self.prefixes:
            importer = _importer(prefix)
            if importer is not None:
                raise ModuleNotFoundError(
                    f"{fullname!r} is imported by {importer} but the built layer does not ship it "
                    f"(layers/common/requirements.txt, excluded.txt)",
                    name=fullname,
                )
        return None


def install(layer_dir: str) -> LayerGuard:
    layer = Path(layer_dir).resolve()
    if not (layer / "notify_core").is_dir():
        raise SystemExit(f"NOTIFY_LAYER={layer_dir}: no built layer there (make build)")
    if str(layer) not in (str(Path(p).resolve()) for p in sys.path[:3] if p):
        raise SystemExit(f"NOTIFY_LAYER={layer_dir} must also come first on PYTHONPATH (make test-layer)")
    guard = LayerGuard(layer)
    wrong = sorted(
        name
        for name, module in list(sys.modules.items())
        if name.partition(".")[0] in guard.names
        and (getattr(module, "__file__", None) or "").startswith(str(Path(sys.prefix)))
    )
    if wrong:
        raise SystemExit(f"imported from the venv before the layer guard: {', '.join(wrong[:10])}")
    sys.meta_path.insert(0, guard)
    return guard
