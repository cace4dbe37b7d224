"""`make chaos`: python -m bench.chaos [--quick] [--only SCENARIO ...]

Exit status 0 when every scenario met every target, 1 otherwise; stdout ends with `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import __doc__ as SUITE_DOC
from .measure import say
from .report import render
from .scenarios import all_scenarios
from .suite import Result, environment, run_scenario


def main(argv: list[str] | None = None) -> int:
    scenarios = all_scenarios()
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=SUITE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a fifth of the load, for development")
    parser.add_argument(
        "--only",
        action="append",
        choices=[s.key for s in scenarios],
        help="run only this scenario (repeatable)",
    )
    args = parser.parse_args(argv)
    chosen = [s for s in all_scenarios(args.quick) if not args.only or s.key in args.only]
    started = time.monotonic()
    results: list[Result] = []
    with environment() as env:
        header = [
            f"Fault-injection suite{' (--quick)' if args.quick else ''}: {len(chosen)} scenarios",
            f"  PostgreSQL  {env.pg.describe()} (the suite's own)",
            f"  Redis       {env.redis.describe()} (the suite's own)",
            f"  SQS         {env.sqs_endpoint} ({env.sqs_kind}; queues of a stack of each scenario's own)",
            f"  provider    stub in its own process at {env.stub.url}",
        ]
        for scenario in chosen:
            result = run_scenario(scenario, env)
            results.append(result)
            say(f"{scenario.key}: {'PASS' if result.passed else 'FAIL'} in {result.duration_s:.0f} s")
    print(render(results, time.monotonic() - started, header), flush=True)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    sys.exit(main())
