"""`make mutate`: mutation testing of the decision modules against the unit tier (no services).

mutmut changes one small thing at a time in the modules listed in DECISION_MODULES (a comparison,
a constant, a boolean, an argument) and runs the unit tests that cover it; a mutant the tests
notice is *killed*, one they do not is *survived*. The score is killed / (killed + survived).

mutmut works on a source tree whose packages sit at its top or under `src/`, so the run happens in
a workspace (`.local/mutation/`): `src/notify_core` is a copy of `layers/common/notify_core`, with
the tests, functions, events and template beside it. mutmut lives in a venv of its own
(`.local/mutate-venv`): it needs a newer `click` than the SAM CLI of the project's venv allows.

Prints the surviving mutants by file and line (with the change), a table per module, and one line
`RESULT {"killed", "survived", "score", ...}`. Equivalent mutants (changes that cannot alter
behaviour) are listed in EQUIVALENT with the reason, and counted apart, never silently dropped.

    .venv/bin/python scripts/mutate.py [--max-children 2] [--module steps]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".local" / "mutation"
VENV = ROOT / ".local" / "mutate-venv"
PY = VENV / "bin" / "python"

# The modules whose decisions the unit tier is meant to pin down.
DECISION_MODULES = [
    "notify_core/delivery/steps.py",
    "notify_core/delivery/outcomes.py",
    "notify_core/delivery/routing.py",
    "notify_core/states.py",
    "notify_core/fields.py",
    "notify_core/auth.py",
    "notify_core/http.py",
    "notify_core/jsontext.py",
    "notify_core/pagination.py",
    "notify_core/suppressions.py",
    "notify_core/audience/quiet_hours.py",
    "notify_core/audience/preferences.py",
    "notify_core/audience/delivery.py",
]

# routing.failover records the failed attempt as a Hop only for `tally`, which asks whether it was
# the provider's fault (its `fault`, always set: ProviderError.fault is never None) and whether it was
# a permanent_error: whether a transient one was ambiguous, and its code, change no choice.
_HOP_WHY = "the hop only feeds tally, which tells permanent_error from the rest and reads the given fault"
_HOP_MUTATIONS = (
    'getattr(error, "ambiguous", False)) and False',
    'getattr(error, "ambiguous", False)) or True',
    'else "XXambiguousXX"',
    'else "AMBIGUOUS"',
    'getattr(None, "ambiguous", False)',
    'getattr(error, "ambiguous", None)',
    'getattr(error, "ambiguous", )',
    'getattr(error, "XXambiguousXX", False)',
    'getattr(error, "AMBIGUOUS", False)',
    'getattr(error, "ambiguous", True)',
    'else "XXtransient_errorXX"',
    'else "TRANSIENT_ERROR"',
    "outcome, error.fault, None)]",
    "outcome, error.fault, )]",
)

# Mutants that cannot change behaviour: (function, the mutated line as mutmut writes it, why).
# A survivor matching one is reported apart with the reason and kept out of the score; the match is
# on the code, not on mutmut's numbering, which shifts whenever the module changes.
EQUIVALENT: list[tuple[str, str, str]] = [
    (
        "notify_core.fields.x__in_range",
        "utc = value.astimezone(None)",
        "aware datetimes compare by instant: converting to the local zone instead of UTC changes no comparison",
    ),
    (
        "notify_core.pagination.x__position",
        "when.astimezone(None)",
        "aware datetimes compare by instant: converting to the local zone instead of UTC changes no comparison",
    ),
    (
        "notify_core.jsontext.x_depth",
        "if level >= deepest:",
        "when level equals deepest, assigning it again changes nothing",
    ),
    # codec and header names: Python's codec registry and the gate's header lookup ignore case
    ("notify_core.http.x_check_media_type", 'get("charset", "UTF-8")', "lower-cased on the same line"),
    ("notify_core.http.x_raw_body", 'encode("UTF-8", "surrogateescape")', "codec names ignore case"),
    ("notify_core.http.x_read_json", '.decode("UTF-8")', "codec names ignore case"),
    ("notify_core.http.x_read_json", 'text.encode("UTF-8")', "codec names ignore case"),
    ("notify_core.auth.x_hash_key", 'encode("UTF-8", "surrogatepass")', "codec names ignore case"),
    (
        "notify_core.http.x_gate",
        '_header(headers, "CONTENT-TYPE")',
        "_header lower-cases the name it looks for",
    ),
    (
        "notify_core.http.x_check_media_type",
        'if parsed else "XXXX"',
        "the else-branch value is the charset of a value that is not a media type, refused by parsed is None anyway",
    ),
    (
        "notify_core.auth.x_key_from_headers",
        'get("authorization", "XXXX")',
        "a missing Authorization header's default only has to not start with 'bearer ': so does XXXX",
    ),
    (
        "notify_core.auth.xǁ_Lruǁput",
        "popitem(last=None)",
        "None is false, as False is: the oldest entry goes",
    ),
    # quiet hours
    (
        "notify_core.audience.quiet_hours.x__resolve",
        "naive.replace(tzinfo=zone, ).astimezone(UTC)",
        "fold=0 is replace()'s default",
    ),
    (
        "notify_core.audience.quiet_hours.x__resolve",
        "== naive and _wall(late, zone) == naive",
        "fold 0 and 1 read alike except in a gap (neither is the naive reading) or a repeat (both are): "
        "never exactly one of them",
    ),
    (
        "notify_core.audience.quiet_hours.x__resolve",
        "while high - low >= timedelta(seconds=1):",
        "any stop at an interval of a second or less gives the same result: low is before the jump, high at or "
        "after it, and the jump falls on a whole second, which replace(microsecond=0) lands on",
    ),
    (
        "notify_core.audience.quiet_hours.x__resolve",
        "middle = low + (high - low) / 3",
        "any split point narrows the same bracket around the jump (see the line above): slower, same result",
    ),
    (
        "notify_core.audience.quiet_hours.x__resolve",
        "if _wall(middle, zone) <= naive:",
        "inside a gap no instant reads the naive time, so < and <= never differ",
    ),
    ("notify_core.audience.quiet_hours.x_first_reading", "last=None", "None is false, as False is"),
    (
        "notify_core.audience.quiet_hours.x_hold_until",
        "moment = at.astimezone(None)",
        "the instant is only compared (by instant) and converted to the user's zone; its own zone never shows",
    ),
    (
        "notify_core.audience.quiet_hours.x_inside_by_the_clock",
        "_wall(at.astimezone(None), zone)",
        "_wall converts to the user's zone: the zone converted from does not matter",
    ),
    (
        "notify_core.audience.quiet_hours.xǁWindowǁintervals",
        "for offset in (+2, -1, 0):",
        "a window starting two days before `around` (local) ends by the end time of the next day, before "
        "`around`'s own day begins, so it never contains `around`; one starting two days after never does either",
    ),
    (
        "notify_core.audience.quiet_hours.xǁWindowǁintervals",
        "for offset in (-3, -1, 0):",
        "as for +2: neither the window two days before nor three days before can contain `around`",
    ),
    # the audience's view holds users by their (non-null) id
    (
        "notify_core.audience.delivery.x_preference_reason",
        "if (row.user_id) or True else None",
        "view.users is keyed by user ids, never None: users.get(None) is None",
    ),
    (
        "notify_core.audience.delivery.x_held_until",
        "if (row.user_id) or True else None",
        "view.users is keyed by user ids, never None: users.get(None) is None",
    ),
    # cursors
    (
        "notify_core.pagination.x_encode",
        'separators=(",", "XX:XX")',
        "the key separator of json.dumps is never used for a list",
    ),
    (
        "notify_core.pagination.x_encode",
        'rstrip("XX=XX")',
        "the encoded list always ends in '\"]', so its base64 ends in d, 0 or Q before the padding, never X",
    ),
    (
        "notify_core.pagination.x__position",
        '"=" * (+len(cursor) % 4)',
        "base64 decoding ignores excess padding: where one = is needed this adds three, elsewhere the same count",
    ),
    *(("notify_core.delivery.routing.x_failover", code, _HOP_WHY) for code in _HOP_MUTATIONS),
]


def ensure_venv() -> None:
    stamp = VENV / ".installed"
    if stamp.exists() and stamp.stat().st_mtime > (ROOT / "pyproject.toml").stat().st_mtime:
        return
    python = getattr(sys, "_base_executable", sys.executable)  # the interpreter this venv was made from
    subprocess.run([python, "-m", "venv", str(VENV)], check=True)
    pip = [str(PY), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # the project's own dependencies and test tools, without the project itself (its editable
    # finder would shadow the mutated copy) and without the SAM CLI
    subprocess.run([*pip, "-e", str(ROOT), "pytest", "hypothesis", "moto>=5", "mutmut>=3.8"], check=True)
    subprocess.run([str(PY), "-m", "pip", "uninstall", "-y", "-q", "notification-platform"], check=True)
    site = subprocess.run(
        [str(PY), "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # notify_local from the repository; notify_core from the workspace's mutated copy (also for
    # tests that start a fresh interpreter)
    Path(site, "notify-mutation.pth").write_text(f"{ROOT / 'localdev'}\n{WORK / 'mutants' / 'src'}\n")
    stamp.touch()


def workspace(modules: list[str]) -> None:
    if WORK.exists():
        shutil.rmtree(WORK)
    (WORK / "src").mkdir(parents=True)
    shutil.copytree(ROOT / "layers/common/notify_core", WORK / "src/notify_core")
    for name in ("tests", "functions", "events"):
        shutil.copytree(ROOT / name, WORK / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "template.yaml", WORK / "template.yaml")
    (WORK / "layers/common").mkdir(parents=True)  # the template's layer build inputs, for its tests
    for item in (ROOT / "layers/common").iterdir():
        if item.is_file():
            shutil.copy2(item, WORK / "layers/common" / item.name)
    only = ",\n    ".join(json.dumps(f"src/{m}") for m in modules)
    (WORK / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = [\n    {only},\n]\n"
        'also_copy = ["functions", "events", "template.yaml", "layers"]\n'
        'pytest_add_cli_args_test_selection = ["tests/unit"]\n'
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
        "[tool.pytest.ini_options]\n"
        'filterwarnings = ["ignore:No application metrics to publish:UserWarning"]\n'
    )
    (WORK / "mutants" / "src").mkdir(parents=True)


def run(max_children: int) -> bool:
    """mutmut's run; False (with the end of its output) when it could not run the tests at all,
    e.g. a unit test failing before any mutation."""
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [str(VENV / "bin" / "mutmut"), "run", "--max-children", str(max_children)],
        cwd=WORK,
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0 or "failed to collect stats" in output:
        print("\n".join(output.splitlines()[-40:]), file=sys.stderr)
        print(f"mutmut could not run (exit {done.returncode}): see above", file=sys.stderr)
        return False
    return True


LINE = re.compile(r"^\s*(?P<name>\S+__mutmut_\d+): (?P<status>.+)$")


def results() -> dict[str, str]:
    out = subprocess.run(
        [str(VENV / "bin" / "mutmut"), "results", "--all", "true"],
        cwd=WORK,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found = {}
    for line in out.splitlines():
        match = LINE.match(line)
        if match:
            found[match["name"]] = match["status"].strip()
    return found


def show(name: str) -> str:
    return subprocess.run(
        [str(VENV / "bin" / "mutmut"), "show", name], cwd=WORK, capture_output=True, text=True, check=False
    ).stdout


def where(name: str, diff: str) -> tuple[str, int, str]:
    """(file, line, change) of a mutant, read from its diff against the original function."""
    module = name.split(".x")[0].split(".xǁ")[0]
    path = "layers/common/" + module.replace(".", "/") + ".py"
    source = (ROOT / path).read_text().splitlines()
    removed = [ln[1:] for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    added = [ln[1:] for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    line = 0
    if removed:
        target = removed[0].strip()
        line = next((i + 1 for i, text in enumerate(source) if text.strip() == target), 0)
    change = f"{removed[0].strip() if removed else ''}  →  {added[0].strip() if added else ''}"
    return path, line, change


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--module", action="append", help="only modules whose path contains this")
    args = parser.parse_args()
    modules = [m for m in DECISION_MODULES if not args.module or any(k in m for k in args.module)]
    ensure_venv()
    workspace(modules)
    if not run(args.max_children):
        return 1
    found = results()
    per_module: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    survivors: list[tuple[str, str]] = []
    equivalent: list[tuple[str, str, str]] = []
    for name, status in sorted(found.items()):
        module = name.split(".x")[0].split(".xǁ")[0]
        key = {"killed": "killed", "survived": "survived", "timeout": "killed"}.get(status, status)
        if key == "survived":
            diff = show(name)
            reason = next(
                (why for func, code, why in EQUIVALENT if name.startswith(func + "__") and code in diff), None
            )
            if reason is not None:
                equivalent.append((name, diff, reason))
                per_module[module]["equivalent"] += 1
                continue
            survivors.append((name, diff))
        per_module[module][key] += 1
    print("surviving mutants (file:line  original  →  mutated):")
    for name, diff in survivors:
        path, line, change = where(name, diff)
        print(f"  {path}:{line}  {change}   [{name}]")
    print("equivalent mutants, not counted:")
    for name, diff, reason in equivalent:
        path, line, change = where(name, diff)
        print(f"  {path}:{line}  {change}: {reason}")
    print(f"\n{'module':<40} {'killed':>7} {'survived':>9} {'other':>6} {'score':>7}")
    killed = survived = other = 0
    for module, counts in sorted(per_module.items()):
        k, s = counts.get("killed", 0), counts.get("survived", 0)
        o = sum(v for c, v in counts.items() if c not in ("killed", "survived", "equivalent"))
        # "other": mutants mutmut could not judge (no covering test, not run); listed, never counted
        killed, survived, other = killed + k, survived + s, other + o
        print(f"{module:<40} {k:>7} {s:>9} {o:>6} {k / max(k + s, 1):>7.1%}")
    score = killed / max(killed + survived, 1)
    print(f"{'total':<40} {killed:>7} {survived:>9} {other:>6} {score:>7.1%}")
    print(
        "RESULT "
        + json.dumps(
            {
                "killed": killed,
                "survived": survived,
                "score": round(score, 4),
                "not_run": other,
                "equivalent": len(equivalent),
                "modules": {m: dict(c) for m, c in per_module.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
