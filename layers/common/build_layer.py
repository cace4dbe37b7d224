"""Build the CommonLayer: what the functions import at run time, precompiled for a read-only /opt.

`sam build` runs this through layers/common/Makefile (BuildMethod: makefile, target
build-CommonLayer) with ARTIFACTS_DIR set; `make build` prints the report it ends with.

    python3.12 build_layer.py --out "$ARTIFACTS_DIR"     # build into $ARTIFACTS_DIR/python
    python3.12 build_layer.py --report DIR               # only measure an existing layer

Steps:
1. `pip install --target` the roots in requirements.txt, as Lambda wheels (manylinux up to glibc
   2.34, the python3.12 runtime's; cp312; binary only), without pip's timestamp-based bytecode.
2. Keep only the distributions reachable from the roots through their declared requirements
   (extras honoured), not walking into the ones excluded.txt names; everything else pip brought
   is removed file by file (each distribution's RECORD). excluded.txt says why each one goes.
3. Copy the domain package (notify_core, with its migrations) beside them.
4. Compile every .py to unchecked-hash .pyc: /opt is read-only, so a cold start cannot write
   bytecode, and a timestamp .pyc would be stale (a layer zip does not keep mtimes exactly), so
   without this every cold start compiles every module it imports. Code objects name their files
   as /opt/python/..., as tracebacks on Lambda will.
5. Report the size (unzipped, as Lambda counts it against 250 MB with the functions, and the
   budget LAYER_BUDGET_MB, default 100) and fail above the budget.
"""

from __future__ import annotations

import argparse
import compileall
import csv
import fnmatch
import os
import py_compile
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from email.parser import Parser
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
EXCLUDED = HERE / "excluded.txt"
PACKAGES = ("notify_core",)  # the project's own code shipped in the layer
LAMBDA_PREFIX = "/opt/python"  # where Lambda mounts the layer's python/ folder
PYTHON_VERSION = "3.12"
# The python3.12 runtime (Amazon Linux 2023) has glibc 2.34: wheels for manylinux_2_17 .. 2_34 run.
PLATFORMS = ["manylinux2014_x86_64", *(f"manylinux_2_{minor}_x86_64" for minor in range(17, 35))]
# Junk that pip leaves in a --target folder and nothing imports.
JUNK = ("bin", "test", "tests")
MB = 1024 * 1024


def _requirement_tools() -> tuple[type, type, object]:
    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # pip vendors packaging; a bare python3.12 with pip has it
        from pip._vendor.packaging.markers import default_environment  # type: ignore[no-redef]
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
        from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]
    return Requirement, canonicalize_name, default_environment  # type: ignore[return-value]


Requirement, canonicalize_name, default_environment = _requirement_tools()


def read_list(path: Path) -> list[str]:
    """Non-empty lines without comments."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def lambda_environment(extra: str = "") -> dict[str, str]:
    env = dict(default_environment())  # type: ignore[operator]
    env.update(
        python_version=PYTHON_VERSION,
        python_full_version=f"{PYTHON_VERSION}.0",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
        os_name="posix",
        implementation_name="cpython",
        platform_python_implementation="CPython",
        extra=extra,
    )
    return env


# ------------------------------------------------------------------ installed distributions


class Dist:
    def __init__(self, info: Path) -> None:
        self.info = info
        meta = Parser().parsestr(
            (info / "METADATA").read_text(encoding="utf-8", errors="replace"), headersonly=True
        )
        self.name = canonicalize_name(meta["Name"])  # type: ignore[operator]
        self.version = meta["Version"]
        self.requires = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]  # type: ignore[operator]

    def files(self, root: Path) -> list[Path]:
        record = self.info / "RECORD"
        if not record.exists():
            return [self.info]
        with record.open(encoding="utf-8", newline="") as handle:
            return [root / row[0] for row in csv.reader(handle) if row]

    def needs(self, extras: Iterable[str]) -> list[tuple[str, frozenset[str]]]:
        out = []
        for req in self.requires:
            marker = req.marker
            if marker is None or any(marker.evaluate(lambda_environment(extra)) for extra in ("", *extras)):
                out.append((canonicalize_name(req.name), frozenset(req.extras)))
        return out


def installed(root: Path) -> dict[str, Dist]:
    dists = (Dist(info) for info in root.glob("*.dist-info"))
    return {d.name: d for d in dists}


def reachable(dists: dict[str, Dist], roots: list[str], excluded: set[str]) -> dict[str, set[str]]:
    """name -> extras wanted, for every distribution the roots need (not walking into excluded)."""
    wanted: dict[str, set[str]] = {}
    todo = []
    for line in roots:
        req = Requirement(line)  # type: ignore[operator]
        todo.append((canonicalize_name(req.name), frozenset(req.extras)))  # type: ignore[operator]
    while todo:
        name, extras = todo.pop()
        if name in excluded:
            continue
        seen = wanted.get(name)
        if seen is not None and extras <= seen:
            continue
        wanted.setdefault(name, set()).update(extras)
        if name not in dists:
            raise SystemExit(f"build_layer: {name} is required but pip did not install it")
        todo.extend(dists[name].needs(wanted[name]))
    return wanted


def remove_dist(root: Path, dist: Dist) -> int:
    removed = 0
    for path in dist.files(root):
        try:
            resolved = path.resolve()
        except OSError:
            continue
        if root.resolve() not in resolved.parents:
            continue  # RECORD may list ../../bin/... scripts: never outside the layer
        if resolved.is_file() or resolved.is_symlink():
            removed += resolved.stat().st_size
            resolved.unlink()
    shutil.rmtree(dist.info, ignore_errors=True)
    return removed


def prune_empty_dirs(root: Path) -> None:
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()


# ------------------------------------------------------------------ steps


def pip_install(python: str, target: Path) -> None:
    cmd = [
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--no-warn-conflicts",  # pip compares with the venv it runs from, not with the layer
        "--target",
        str(target),
        "--implementation",
        "cp",
        "--python-version",
        PYTHON_VERSION,
        "--abi",
        "cp312",
        "--only-binary=:all:",
        *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
        "-r",
        str(REQUIREMENTS),
    ]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    noise = "is ignored: it is neither a file nor a directory"  # a machine's stale find-links
    for line in (result.stdout + result.stderr).splitlines():
        if noise not in line:
            print(line, file=sys.stderr)
    if result.returncode:
        raise SystemExit(f"build_layer: pip install failed ({result.returncode})")


def exclusions() -> tuple[set[str], list[tuple[str, list[str]]]]:
    """excluded.txt: distribution names, and parts of kept distributions: `package.* except a,b`
    (subpackages and modules nothing imports) or `folder/* except a,b*` (data files; the names are
    glob patterns matched against the file names without their extension)."""
    names: set[str] = set()
    parts: list[tuple[str, list[str]]] = []
    for line in read_list(EXCLUDED):
        first, _, rest = line.partition(" ")
        if first.endswith((".*", "/*")):
            keep = rest.strip().removeprefix("except").replace(",", " ").split()
            folder = first[:-2] if first.endswith("/*") else first[:-2].replace(".", "/")
            parts.append((folder, [k.rsplit(".", 1)[-1] if first.endswith(".*") else k for k in keep]))
        else:
            names.add(canonicalize_name(first))  # type: ignore[operator]
    return names, parts


def prune_parts(target: Path, patterns: list[tuple[str, list[str]]]) -> list[tuple[str, str, int]]:
    gone = []
    for relative, keep in patterns:
        folder = target / relative
        if not folder.is_dir():
            # a rule for a dependency not (or no longer) in requirements.txt
            print(f"build_layer: excluded.txt: {relative}/ is not in the layer; rule skipped")
            continue
        size = 0
        for child in folder.iterdir():
            stem = child.name.split(".", 1)[0]
            if stem.startswith("__") or child.name.endswith(".pyi"):
                continue
            if any(fnmatch.fnmatchcase(stem, pattern) for pattern in keep):
                continue
            size += tree_bytes(child) if child.is_dir() else child.stat().st_size
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        gone.append((f"{relative}/* except {', '.join(keep)}", "", size))
    return gone


def prune(target: Path) -> list[tuple[str, str, int]]:
    """Remove what the roots do not need; returns (name, version, bytes) of what went."""
    excluded, part_patterns = exclusions()
    dists = installed(target)
    keep = reachable(dists, read_list(REQUIREMENTS), excluded)
    gone = []
    for name, dist in sorted(dists.items()):
        if name not in keep:
            gone.append((name, dist.version, remove_dist(target, dist)))
    gone += prune_parts(target, part_patterns)
    for junk in JUNK:
        shutil.rmtree(target / junk, ignore_errors=True)
    prune_empty_dirs(target)
    return gone


def copy_packages(source: Path, target: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(
            source / package,
            target / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            dirs_exist_ok=True,
        )


def compile_bytecode(target: Path) -> None:
    ok = compileall.compile_dir(
        str(target),
        quiet=2,
        workers=0,
        stripdir=str(target),
        prependdir=LAMBDA_PREFIX,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise SystemExit("build_layer: some modules do not compile")


# ------------------------------------------------------------------ report


def tree_bytes(root: Path, pattern: str | None = None) -> int:
    rx = re.compile(pattern) if pattern else None
    return sum(
        p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and (rx is None or rx.search(p.name))
    )


def zipped_bytes(root: Path) -> int:
    """Size of the layer zip (what `sam deploy` uploads), written to a scratch file."""
    scratch = root.parent / ".layer-size.zip"
    try:
        with zipfile.ZipFile(scratch, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(root.parent))
        return scratch.stat().st_size
    finally:
        scratch.unlink(missing_ok=True)


def report(layer: Path, zipped: bool = True) -> dict[str, float]:
    """Sizes of a built layer (the folder holding python/), in MB of 2^20 bytes (as Lambda counts its 250 MB)."""
    python = layer / "python" if (layer / "python").is_dir() else layer
    total = tree_bytes(python)
    pyc = tree_bytes(python, r"\.pyc$")
    figures = {
        "unzipped_mb": round(total / MB, 1),
        "without_bytecode_mb": round((total - pyc) / MB, 1),
        "bytecode_mb": round(pyc / MB, 1),
    }
    if zipped:
        figures["zipped_mb"] = round(zipped_bytes(python) / MB, 1)
    return figures


def largest(python: Path, count: int = 12) -> list[tuple[str, float]]:
    sizes: dict[str, int] = {}
    for path in python.iterdir():
        name = path.name
        if name.endswith((".dist-info", ".data")):
            continue
        size = path.stat().st_size if path.is_file() else tree_bytes(path)
        sizes[name] = sizes.get(name, 0) + size
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:count]
    return [(name, round(size / MB, 1)) for name, size in top]


def print_report(layer: Path, budget_mb: float) -> bool:
    figures = report(layer)
    python = layer / "python" if (layer / "python").is_dir() else layer
    ok = figures["unzipped_mb"] <= budget_mb
    print(
        f"CommonLayer: {figures['unzipped_mb']} MB unzipped with bytecode "
        f"({figures['without_bytecode_mb']} MB without, {figures['bytecode_mb']} MB of .pyc), "
        f"{figures['zipped_mb']} MB zipped; budget {budget_mb:g} MB unzipped: " + ("ok" if ok else "OVER")
    )
    print("  largest: " + ", ".join(f"{name} {mb}" for name, mb in largest(python)))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="ARTIFACTS_DIR of sam build (the layer root)")
    parser.add_argument("--report", type=Path, help="only print the sizes of a built layer")
    parser.add_argument("--python", default=sys.executable, help="python3.12 whose pip installs")
    parser.add_argument("--budget-mb", type=float, default=float(os.environ.get("LAYER_BUDGET_MB", "100")))
    args = parser.parse_args(argv)
    if args.report:
        return 0 if print_report(args.report, args.budget_mb) else 1
    if args.out is None:
        parser.error("--out or --report is required")
    target = args.out / "python"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    pip_install(args.python, target)
    gone = prune(target)
    if gone:
        print(
            "build_layer: not shipped: "
            + ", ".join(
                f"{name} {version} ({size / MB:.1f} MB)".replace("  ", " ") for name, version, size in gone
            )
        )
    copy_packages(HERE, target)
    compile_bytecode(target)
    return 0 if print_report(args.out, args.budget_mb) else 1


if __name__ == "__main__":
    sys.exit(main())
