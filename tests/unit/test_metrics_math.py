"""The metrics' latency histogram: a bin's middle is within 4.4% of every latency in it, so a
nearest-rank percentile read from the bins (four significant digits) is within 4.5% of the exact one; days merge from hours."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from notify_core.metrics_rollup import _buckets, _percentiles, bin_value, latency_bin, percentiles, reported

LATENCY = st.floats(min_value=1.0, max_value=1e9, allow_nan=False)


@given(LATENCY)
def test_a_bins_middle_is_within_four_point_four_percent(ms: float) -> None:
    assert abs(bin_value(latency_bin(ms)) - ms) <= 0.0443 * ms


@given(st.lists(LATENCY, min_size=1, max_size=400), st.sampled_from([50.0, 95.0, 99.0, 100.0, 1.0]))
def test_percentiles_from_bins_are_within_five_percent_of_exact(values: list[float], p: float) -> None:
    exact = sorted(values)[max(1, math.ceil(p / 100 * len(values))) - 1]
    (estimate,) = percentiles(Counter(latency_bin(v) for v in values), (p,))
    assert estimate is not None and abs(estimate - exact) <= 0.05 * exact


@given(st.lists(LATENCY, min_size=1, max_size=200))
def test_the_fast_path_agrees_with_the_histogram_walk(values: list[float]) -> None:
    bins = Counter(latency_bin(v) for v in values)
    ordered = sorted(bins)
    fast = _percentiles(ordered, [bins[i] for i in ordered])
    assert [fast["p50"], fast["p95"], fast["p99"]] == percentiles(bins, (50, 95, 99))
    assert fast["count"] == len(values)


def test_days_add_up_their_hours() -> None:
    day = 1_790_000_000 - 1_790_000_000 % 86400
    rows = [
        (day, "email", 3, [10, 20], [1, 2]),
        (day, "email", 2, [20, 30], [1, 1]),
        (day, "sms", 4, [], []),
        (day + 86400, "email", 1, [40], [1]),
    ]
    out = _buckets(rows, ["channel"])
    assert [(b["bucket"][:10], b["group"], b["count"]) for b in out] == [
        ("2026-09-21", {"channel": "email"}, 5),
        ("2026-09-21", {"channel": "sms"}, 4),
        ("2026-09-22", {"channel": "email"}, 1),
    ]
    merged = out[0]["latency_ms"]
    assert merged["count"] == 5 and merged["p50"] == reported(20) and merged["p99"] == reported(30)
    assert out[1]["latency_ms"] is None
