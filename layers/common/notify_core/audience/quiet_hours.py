"""Quiet hours: when a user does not want to be disturbed, in their own IANA time zone (pure).

A window is a start and an end wall-clock time (`22:00` to `07:00`; an end at or before the start
crosses midnight) and optionally the days it starts on (`fri` means Friday night into Saturday).
Each day's window is turned into an interval of instants:

* its start is the first instant the user's clock reads the start time (a start inside a
  spring-forward gap, such as 02:30 on 2026-03-08 in New York, starts when the clock jumps past it);
* its end is the last instant the clock reads the end time (an end inside a fall-back repeat, such
  as 01:30 on 2026-11-01 in New York, is the second 01:30; an end inside a gap, the jump).

So every instant whose wall-clock reading lies inside the window is inside the interval, whatever
DST does that night, and a notification due inside it is held until the interval ends (`hold_until`;
overlapping intervals are followed to the end of the last). Zones come from `zoneinfo`, with the
`tzdata` package as the source where the operating system has no zone data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Window:
    start: time
    end: time
    days: frozenset[int] | None = None  # weekday() numbers the window starts on; None: every day

    @classmethod
    def parse(cls, start: str, end: str, days: Iterable[str] | None = None) -> Window:
        """From the API's form ("22:00", "07:00", ["mon", ...]); ValueError when malformed."""
        return cls(
            parse_clock(start),
            parse_clock(end),
            None if days is None else frozenset(DAYS.index(d) for d in days),
        )

    def intervals(self, zone: ZoneInfo, around: datetime) -> list[tuple[datetime, datetime]]:
        """The windows (as UTC instants) that start on the local days from two before `around`
        to the day of `around`: every window that can contain `around` or end after it."""
        today = around.astimezone(zone).date()
        out = []
        for offset in (-2, -1, 0):
            day = today + timedelta(days=offset)
            if self.days is not None and day.weekday() not in self.days:
                continue
            end_day = day if self.end > self.start else day + timedelta(days=1)
            out.append((first_reading(zone, day, self.start), last_reading(zone, end_day, self.end)))
        return out


def parse_clock(text: str) -> time:
    """ "HH:MM" (24-hour, 00:00 to 23:59) → time; ValueError otherwise (`25:00`, `7:5`, `24:00`)."""
    if len(text) != 5 or text[2] != ":" or not (text[:2] + text[3:]).isdigit() or not text.isascii():
        raise ValueError("must be a time of day as HH:MM, 00:00 to 23:59")
    hour, minute = int(text[:2]), int(text[3:])
    if hour > 23 or minute > 59:
        raise ValueError("must be a time of day as HH:MM, 00:00 to 23:59")
    return time(hour, minute)


def zone_of(name: str | None) -> ZoneInfo:
    """The user's zone; UTC when they have none (or one this runtime does not know)."""
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _resolve(zone: ZoneInfo, day: date, clock: time, last: bool) -> datetime:
    naive = datetime.combine(day, clock)
    early = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)  # in a gap: before the jump
    late = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)  # in a gap: after the jump
    early, late = min(early, late), max(early, late)
    if _wall(early, zone) == naive or _wall(late, zone) == naive:
        # the reading exists (once, or twice in a fall-back repeat): its first or last occurrence
        candidates = [c for c in (early, late) if _wall(c, zone) == naive]
        return max(candidates) if last else min(candidates)
    # inside a spring-forward gap: the first instant whose reading is past it (the jump itself)
    low, high = early, late  # wall(low) < naive < wall(high)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if _wall(middle, zone) < naive:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)


def first_reading(zone: ZoneInfo, day: date, clock: time) -> datetime:
    """The first instant the clock in `zone` reads `clock` on `day` (or jumps past it)."""
    return _resolve(zone, day, clock, last=False)


def last_reading(zone: ZoneInfo, day: date, clock: time) -> datetime:
    """The last instant the clock in `zone` reads `clock` on `day` (or jumps past it)."""
    return _resolve(zone, day, clock, last=True)


def hold_until(window: Window | None, zone: ZoneInfo, at: datetime) -> datetime | None:
    """When the quiet hours that `at` falls in end (UTC), or None when `at` is not inside any."""
    if window is None:
        return None
    moment = at.astimezone(UTC)
    end: datetime | None = None
    for _ in range(4):  # overlapping windows (a long window on a DST night) chain at most this far
        inside = [e for s, e in window.intervals(zone, moment) if s <= moment < e]
        if not inside:
            return end
        end = moment = max(inside)
    return end


def inside_by_the_clock(window: Window, zone: ZoneInfo, at: datetime) -> bool:
    """Whether the user's clock at `at` reads a time inside the window on a day it applies to
    (the plain reading of "quiet from 22:00 to 07:00"; `hold_until` holds at least these)."""
    wall = _wall(at.astimezone(UTC), zone)
    for offset in (-1, 0):
        day = wall.date() + timedelta(days=offset)
        if window.days is not None and day.weekday() not in window.days:
            continue
        start = datetime.combine(day, window.start)
        end_day = day if window.end > window.start else day + timedelta(days=1)
        if start <= wall < datetime.combine(end_day, window.end):
            return True
    return False
