"""The report: one summary table, then each scenario in full (settings, the fault's timeline, the
API's answers, every status, dead letters by reason, what the provider received, the targets), and
the last line `RESULT {json}`."""

from __future__ import annotations

import json
from typing import Any

from .suite import COMMON_SETTINGS, PROVIDER_MS, SCHEDULE_SPEEDUP, Result

COLUMNS = (
    ("scenario", 18),
    ("accepted", 9),
    ("sent", 6),
    ("dead letters", 44),
    ("not final", 9),
    ("lost", 4),
    ("prov. dup", 9),
    ("ambiguous", 11),
    ("quiet s", 7),
    ("API max s", 9),
    ("result", 6),
)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _row(result: Result) -> list[str]:
    f = result.figures
    if f is None:
        return [result.scenario.key, *["-"] * (len(COLUMNS) - 2), "ERROR"]
    return [
        result.scenario.key,
        str(f.accepted),
        str(f.sent),
        _counts(f.dead_letters),
        str(f.not_final),
        str(f.lost),
        str(f.provider_duplicates),
        f"{f.ambiguous_attempts}/{f.ambiguous_metric}",
        "-" if f.quiescence_s is None else f"{f.quiescence_s:.0f}",
        f"{f.api.max_s:.2f}",
        "PASS" if result.passed else "FAIL",
    ]


def table(results: list[Result]) -> str:
    lines = [
        "  ".join(name.ljust(width) for name, width in COLUMNS),
        "  ".join("-" * width for _, width in COLUMNS),
    ]
    for result in results:
        lines.append(
            "  ".join(cell.ljust(width) for cell, (_, width) in zip(_row(result), COLUMNS, strict=True))
        )
    return "\n".join(lines)


def legend() -> str:
    return (
        "accepted: notification ids returned in 202s (rows stored without one are shown apart) · sent: status\n"
        "sent · dead letters: open dead letters by reason · not final: accepted and not final at the end · lost:\n"
        "accepted and never final, sent without the provider having taken it, or failed without a dead letter ·\n"
        "prov. dup: notifications the provider took (2xx) more than once · ambiguous: attempt rows with outcome\n"
        "`ambiguous` / the AmbiguousSends metric · quiet s: seconds from the end of the load and the fault until\n"
        "every notification was final and the queue empty · API max s: the slowest API answer of the run\n"
        f"Common settings: template defaults; provider stub (own process) answering SendGrid in {PROVIDER_MS} ms;\n"
        f"{', '.join(f'{k}={v}' for k, v in COMMON_SETTINGS.items())}; notify-local --schedule-speedup"
        f" {SCHEDULE_SPEEDUP} (the sweeper every 10 s)"
    )


def details(result: Result) -> str:
    s = result.scenario
    lines = [f"== {s.key}: {s.title}  [{'PASS' if result.passed else 'FAIL'}, {result.duration_s:.0f} s]"]
    lines.append(
        f"  load        {s.rate:g} notifications/s for {s.seconds:g} s (batches of 10, email via SendGrid)"
    )
    lines.append(f"  fault       {s.fault}")
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items()) or "none"
    lines.append(f"  settings    beyond the common ones: {settings}")
    for event in result.events:
        lines.append(f"  timeline    {event}")
    if result.error:
        lines.append(f"  ERROR       {result.error}")
    f = result.figures
    if f is not None:
        api = f.api
        lines.append(
            f"  API         {api.requests} requests: {_counts(api.answers)}; answer p50 {api.p50_s:.3f} s,"
            f" p99 {api.p99_s:.3f} s, max {api.max_s:.2f} s; sent late by the client {api.late}"
        )
        if api.outage_max_s is not None:
            lines.append(
                f"  outage API  {api.outage_requests} requests left during the outage: slowest answer"
                f" {api.outage_max_s:.2f} s, {api.outage_unanswered} without an answer"
            )
        unacknowledged = f" ({_counts(f.stored_not_accepted_statuses)})" if f.stored_not_accepted else ""
        lines.append(
            f"  accepted    {f.accepted} notifications; stored without a 202: {f.stored_not_accepted}{unacknowledged}"
        )
        lines.append(f"  statuses    {_counts(f.statuses)} (not final: {f.not_final})")
        lines.append(f"  dead letter {_counts(f.dead_letters)}")
        lines.append(
            f"  provider    {f.provider_requests} requests ({_counts(f.provider_answers)}); took"
            f" {f.provider_accepted} notifications, {f.provider_duplicates} of them more than once"
            f" ({f.provider_extra_sends} extra sends)"
        )
        lines.append(
            f"  ambiguous   {f.ambiguous_attempts} attempts on {f.ambiguous_notifications} notifications;"
            f" AmbiguousSends metric {f.ambiguous_metric}"
        )
        interesting = {
            k: v
            for k, v in f.metrics.items()
            if k
            in (
                "RateLimiterUnavailable",
                "SendsReleased",
                "SendsNotStarted",
                "NotificationsRedriven",
                "RedrivesIgnored",
                "SweptNotifications",
            )
        }
        if interesting:
            lines.append(f"  metrics     {_counts(interesting)}")
        extras = {k: v for k, v in result.extras.items() if k != "outage_kind"}
        if extras:
            lines.append(f"  measured    {_counts(extras)}")
        quiet = "not reached" if f.quiescence_s is None else f"{f.quiescence_s:.1f} s"
        lines.append(f"  quiescence  {quiet}")
    for target in result.targets:
        lines.append(f"  {'PASS' if target.passed else 'FAIL'}        {target.name}: {target.detail}")
    if result.log_path:
        lines.append(f"  log         {result.log_path}")
    return "\n".join(lines)


def result_json(results: list[Result], duration_s: float) -> dict[str, Any]:
    scenarios: dict[str, Any] = {}
    for result in results:
        f = result.figures
        entry: dict[str, Any] = {"passed": result.passed}
        if result.error:
            entry["error"] = result.error
        if f is not None:
            entry.update(
                lost=f.lost,
                provider_duplicates=f.provider_duplicates,
                provider_extra_sends=f.provider_extra_sends,
                accepted=f.accepted,
                sent=f.sent,
                statuses=f.statuses,
                dead_letters=f.dead_letters,
                not_final=f.not_final,
                stored_not_accepted=f.stored_not_accepted,
                stored_not_accepted_statuses=f.stored_not_accepted_statuses,
                ambiguous_attempts=f.ambiguous_attempts,
                ambiguous_metric=f.ambiguous_metric,
                unexplained_duplicates=f.unexplained_duplicates,
                false_dead_letters=f.false_dead_letters,
                quiescence_s=None if f.quiescence_s is None else round(f.quiescence_s, 1),
                api_max_s=round(f.api.max_s, 3),
                api_answers=f.api.answers,
            )
            if f.api.outage_max_s is not None:
                entry["outage_api_max_s"] = round(f.api.outage_max_s, 3)
            entry.update({k: v for k, v in result.extras.items() if isinstance(v, int | float | str)})
        scenarios[result.scenario.key] = entry
    return {
        "scenarios": scenarios,
        "passed": all(r.passed for r in results),
        "duration_s": round(duration_s),
    }


def render(results: list[Result], duration_s: float, header: list[str]) -> str:
    parts = [*header, "", table(results), "", legend(), ""]
    for result in results:
        parts += [details(result), ""]
    verdict = "all targets met" if all(r.passed for r in results) else "TARGETS MISSED"
    parts.append(f"{len(results)} scenarios in {duration_s / 60:.1f} min: {verdict}")
    parts.append("RESULT " + json.dumps(result_json(results, duration_s)))
    return "\n".join(parts)
