"""`make coverage`: what the whole suite covers of the domain and the handlers, by part.

Reads the JSON report coverage.py wrote (`.local/coverage.json`, from `pytest --cov --cov-branch`)
and prints, for each part the project holds to a branch-coverage target (the delivery engine,
notifications, the sweeper, the DLQ, auth, the API handler) and for the whole measured tree: lines,
branches and the branches not taken, then one line `RESULT {json}`.

    .venv/bin/python scripts/coverage_report.py [.local/coverage.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = "layers/common/notify_core/"

# part -> the files it is made of (paths relative to the repository; a trailing / is a folder)
PARTS: dict[str, tuple[str, ...]] = {
    "delivery": (CORE + "delivery/", "functions/sender/app.py"),
    "notifications": (CORE + "notifications.py", CORE + "dispatch.py"),
    "sweeper": (CORE + "sweeper.py", "functions/retry_sweeper/app.py"),
    "dlq": (CORE + "dlq.py", CORE + "dead_letters.py", "functions/dlq_processor/app.py"),
    "auth": (CORE + "auth.py",),
    "api handler": ("functions/api/app.py",),
}
TARGET = 0.95


def _relative(name: str) -> str:
    path = Path(name)
    return str(path.relative_to(ROOT)) if path.is_absolute() else name


def main() -> int:
    report = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".local" / "coverage.json")
    files = {
        _relative(name): data["summary"] for name, data in json.loads(report.read_text())["files"].items()
    }
    result: dict[str, dict[str, float | int]] = {}
    print(f"{'part':<16} {'lines':>7} {'branches':>9} {'not taken':>10} {'branch %':>9} {'combined %':>11}")
    for part, members in [*PARTS.items(), ("all measured", ("",))]:
        chosen = [s for name, s in files.items() if any(name.startswith(m) for m in members)]
        statements = sum(s["num_statements"] for s in chosen)
        covered_lines = sum(s["covered_lines"] for s in chosen)
        branches = sum(s["num_branches"] for s in chosen)
        covered_branches = sum(s["covered_branches"] for s in chosen)
        branch = covered_branches / branches if branches else 1.0
        combined = (covered_lines + covered_branches) / max(statements + branches, 1)
        flag = "" if part == "all measured" or branch >= TARGET else "  below target"
        print(
            f"{part:<16} {statements:>7} {branches:>9} {branches - covered_branches:>10}"
            f" {branch:>9.1%} {combined:>11.1%}{flag}"
        )
        result[part] = {
            "branch": round(branch, 4),
            "combined": round(combined, 4),
            "lines": round(covered_lines / max(statements, 1), 4),
        }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
