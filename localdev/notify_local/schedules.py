"""EventBridge schedules, locally: `rate(...)`, `cron(...)` and `at(...)` expressions, when they fire
next, and the event a scheduled rule (or an EventBridge Scheduler schedule) hands to a function.

AWS's cron has six fields, all in UTC unless a ScheduleV2 event names a time zone:

    minutes  hours  day-of-month  month  day-of-week  year
    0-59     0-23   1-31          1-12   1-7          1970-2199
                                  JAN-DEC SUN-SAT (1 = SUN)

Each field takes `*`, a value, a range `a-b`, a list `a,b,c` and steps `*/n`, `a/n`, `a-b/n`.
One of day-of-month and day-of-week must be `?` (and only those two take it). The specials are
supported too: `L` (last day of the month), `LW` (last weekday), `15W` (weekday nearest the 15th)
in day-of-month; `5L` (last Thursday) and `2#1` (first Monday) in day-of-week. A special cannot be
combined with a list. `rate(1 minute)` must be singular and `rate(5 minutes)` plural, as AWS
requires.
"""

from __future__ import annotations

import calendar
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .invoker import Invocation, InvokeResult, Observer
from .stack import ACCOUNT_ID, REGION

log = logging.getLogger("notify_local")

MAX_YEAR = 2199


class ScheduleError(ValueError):
    """A schedule expression AWS would reject (or one this runtime cannot run)."""


# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Rate:
    """`rate(value unit)`: every `seconds`, counted from when the rule was created."""

    text: str
    seconds: int

    def next_after(self, moment: datetime, anchor: datetime, speedup: float = 1.0) -> datetime:
        """The first firing strictly after `moment` of a rule created at `anchor`."""
        period = self.seconds / speedup
        elapsed = (moment - anchor).total_seconds()
        count = max(1, int(elapsed // period) + 1)
        return anchor + timedelta(seconds=count * period)


@dataclass(frozen=True)
class At:
    """`at(yyyy-mm-ddThh:mm:ss)`: once (EventBridge Scheduler only)."""

    text: str
    when: datetime  # naive wall-clock time in the schedule's time zone

    def next_after(self, moment: datetime, tz: ZoneInfo | None = None) -> datetime | None:
        when = self.when.replace(tzinfo=tz or UTC).astimezone(UTC)
        return when if when > moment else None


@dataclass(frozen=True)
class DayOfMonth:
    days: frozenset[int] = frozenset()
    last: bool = False  # L
    last_weekday: bool = False  # LW
    nearest_weekday: int | None = None  # 15W
    any: bool = False  # ?

    def matches(self, day: date) -> bool:
        last_day = calendar.monthrange(day.year, day.month)[1]
        if self.any:
            return True
        if self.last:
            return day.day == last_day
        if self.last_weekday:
            return day.day == _weekday_on_or_before(day.year, day.month, last_day)
        if self.nearest_weekday is not None:
            return day.day == _nearest_weekday(day.year, day.month, self.nearest_weekday)
        return day.day in self.days


@dataclass(frozen=True)
class DayOfWeek:
    days: frozenset[int] = frozenset()  # AWS numbering: 1 = SUN ... 7 = SAT
    last_of_month: int | None = None  # 5L: the last Thursday
    nth: tuple[int, int] | None = None  # (2, 1) for 2#1: the first Monday
    any: bool = False  # ?

    def matches(self, day: date) -> bool:
        if self.any:
            return True
        weekday = aws_weekday(day)
        if self.last_of_month is not None:
            last_day = calendar.monthrange(day.year, day.month)[1]
            return weekday == self.last_of_month and day.day + 7 > last_day
        if self.nth is not None:
            return weekday == self.nth[0] and (day.day - 1) // 7 + 1 == self.nth[1]
        return weekday in self.days


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    day_of_month: DayOfMonth
    months: frozenset[int]
    day_of_week: DayOfWeek
    years: frozenset[int]

    def day_matches(self, day: date) -> bool:
        return (
            day.year in self.years
            and day.month in self.months
            and self.day_of_month.matches(day)
            and self.day_of_week.matches(day)
        )

    def next_after(self, moment: datetime, tz: ZoneInfo | None = None) -> datetime | None:
        """The first firing strictly after `moment` (aware), or None if there is none before 2200."""
        zone = tz or UTC
        local = moment.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=1)
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        day = local.date()
        first_day = True
        while day.year <= MAX_YEAR:
            if day.year not in self.years:
                day, first_day = date(day.year + 1, 1, 1), False
                continue
            if day.month not in self.months:
                year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
                day, first_day = date(year, month, 1), False
                continue
            if self.day_matches(day):
                for hour in hours:
                    if first_day and hour < local.hour:
                        continue
                    for minute in minutes:
                        if first_day and hour == local.hour and minute < local.minute:
                            continue
                        wall = datetime(day.year, day.month, day.day, hour, minute)
                        return wall.replace(tzinfo=zone).astimezone(UTC)
            day, first_day = day + timedelta(days=1), False
        return None


Expression = Rate | Cron | At

_RATE = re.compile(r"^rate\(\s*(\d+)\s+([a-z]+)\s*\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    name: i
    for i, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1
    )
}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_DAY_NAME = re.compile("|".join(_DAYS))


def aws_weekday(day: date) -> int:
    """AWS's day-of-week number: 1 = Sunday ... 7 = Saturday."""
    return (day.weekday() + 1) % 7 + 1


def parse_expression(text: str) -> Expression:
    """Parse a ScheduleExpression as EventBridge (rules) and EventBridge Scheduler accept it."""
    expression = text.strip()
    if expression.startswith("rate("):
        return _parse_rate(expression)
    if expression.startswith("cron(") and expression.endswith(")"):
        return _parse_cron(expression)
    if expression.startswith("at(") and expression.endswith(")"):
        try:
            return At(expression, datetime.strptime(expression[3:-1].strip(), "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            raise ScheduleError(f"{text!r}: at() takes yyyy-mm-ddThh:mm:ss") from None
    raise ScheduleError(f"{text!r}: a schedule expression is rate(...), cron(...) or at(...)")


def _parse_rate(text: str) -> Rate:
    match = _RATE.match(text)
    if not match:
        raise ScheduleError(
            f"{text!r}: expected rate(<positive integer> <minute|minutes|hour|hours|day|days>)"
        )
    value, unit = int(match.group(1)), match.group(2)
    singular = unit.removesuffix("s")
    if singular not in _UNITS:
        raise ScheduleError(f"{text!r}: the unit must be minute(s), hour(s) or day(s)")
    if value <= 0:
        raise ScheduleError(f"{text!r}: the value must be a positive integer")
    if value == 1 and unit != singular:
        raise ScheduleError(f"{text!r}: AWS requires the singular unit for 1 (rate(1 {singular}))")
    if value > 1 and unit == singular:
        raise ScheduleError(f"{text!r}: AWS requires the plural unit above 1 (rate({value} {singular}s))")
    return Rate(text, value * _UNITS[singular])


def _parse_cron(text: str) -> Cron:
    fields = text[5:-1].split()
    if len(fields) != 6:
        raise ScheduleError(
            f"{text!r}: AWS cron has 6 fields (minutes hours day-of-month month day-of-week year), "
            f"got {len(fields)}"
        )
    minute_f, hour_f, dom_f, month_f, dow_f, year_f = fields
    if (dom_f == "?") == (dow_f == "?"):
        raise ScheduleError(
            f"{text!r}: exactly one of day-of-month and day-of-week must be '?' "
            "(AWS cannot take both, nor neither)"
        )
    for name, value in (("minutes", minute_f), ("hours", hour_f), ("month", month_f), ("year", year_f)):
        if "?" in value:
            raise ScheduleError(f"{text!r}: '?' is only allowed in day-of-month and day-of-week ({name})")
    return Cron(
        text,
        minutes=_field(text, "minutes", minute_f, 0, 59),
        hours=_field(text, "hours", hour_f, 0, 23),
        day_of_month=_day_of_month(text, dom_f),
        months=_field(text, "month", month_f, 1, 12, _MONTHS),
        day_of_week=_day_of_week(text, dow_f),
        years=_field(text, "year", year_f, 1970, MAX_YEAR),
    )


def _value(text: str, name: str, token: str, low: int, high: int, names: dict[str, int] | None) -> int:
    upper = token.upper()
    if names and upper in names:
        return names[upper]
    if not token.isdigit():
        raise ScheduleError(f"{text!r}: {token!r} is not a valid {name} value")
    number = int(token)
    if not low <= number <= high:
        raise ScheduleError(f"{text!r}: {name} value {number} is outside {low}-{high}")
    return number


def _field(
    text: str, name: str, spec: str, low: int, high: int, names: dict[str, int] | None = None
) -> frozenset[int]:
    if any(c in spec for c in "LW#"):
        raise ScheduleError(f"{text!r}: L, W and # are only allowed in day-of-month and day-of-week ({name})")
    out: set[int] = set()
    for part in spec.split(","):
        if not part:
            raise ScheduleError(f"{text!r}: empty list item in {name}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{text!r}: {name} step {step_text!r} must be a positive integer")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(text, name, a, low, high, names), _value(text, name, b, low, high, names)
        else:
            start = _value(text, name, base, low, high, names)
            end = high if step_text else start
        if start <= end:
            out.update(range(start, end + 1, step))
        else:  # a range that wraps around (FRI-MON, NOV-FEB, 22-2)
            span = list(range(start, high + 1)) + list(range(low, end + 1))
            out.update(span[::step])
    return frozenset(out)


def _day_of_month(text: str, spec: str) -> DayOfMonth:
    if spec == "?":
        return DayOfMonth(any=True)
    upper = spec.upper()
    if upper == "L":
        return DayOfMonth(last=True)
    if upper == "LW":
        return DayOfMonth(last_weekday=True)
    if upper.endswith("W"):
        day = upper[:-1]
        if not day.isdigit() or not 1 <= int(day) <= 31:
            raise ScheduleError(f"{text!r}: {spec!r}: W takes one day of the month (1W-31W) or LW")
        return DayOfMonth(nearest_weekday=int(day))
    if "L" in upper or "W" in upper or "#" in upper:
        raise ScheduleError(f"{text!r}: {spec!r}: L and W cannot be combined with lists or ranges")
    return DayOfMonth(days=_field(text, "day-of-month", spec, 1, 31))


def _day_of_week(text: str, spec: str) -> DayOfWeek:
    if spec == "?":
        return DayOfWeek(any=True)
    numeric = _DAY_NAME.sub(lambda m: str(_DAYS[m.group()]), spec.upper())
    if numeric == "L":
        return DayOfWeek(days=frozenset({7}))  # as in Quartz: L alone is the last day of the week
    if numeric.endswith("L"):
        day = numeric[:-1]
        if not day.isdigit():
            raise ScheduleError(f"{text!r}: {spec!r}: L takes one day (e.g. 5L, THUL); no lists or ranges")
        return DayOfWeek(last_of_month=_value(text, "day-of-week", day, 1, 7, None))
    if "#" in numeric:
        day, _, nth = numeric.partition("#")
        if not day.isdigit() or not nth.isdigit() or not 1 <= int(nth) <= 5:
            raise ScheduleError(f"{text!r}: {spec!r}: # takes one day and an occurrence 1-5 (e.g. 2#1)")
        return DayOfWeek(nth=(_value(text, "day-of-week", day, 1, 7, None), int(nth)))
    if "L" in numeric or "W" in numeric:
        raise ScheduleError(f"{text!r}: {spec!r}: L cannot be combined with lists; W is day-of-month only")
    return DayOfWeek(days=_field(text, "day-of-week", numeric, 1, 7))


def _weekday_on_or_before(year: int, month: int, day: int) -> int:
    while date(year, month, day).weekday() >= 5:
        day -= 1
    return day


def _nearest_weekday(year: int, month: int, day: int) -> int:
    """Quartz's W: the weekday nearest `day` without leaving the month."""
    last_day = calendar.monthrange(year, month)[1]
    day = min(day, last_day)
    weekday = date(year, month, day).weekday()
    if weekday == 5:  # Saturday -> Friday, or Monday when the 1st is a Saturday
        return day - 1 if day > 1 else day + 2
    if weekday == 6:  # Sunday -> Monday, or Friday when it is the last day
        return day + 1 if day < last_day else day - 2
    return day


def timezone(name: str | None) -> ZoneInfo | None:
    if not name or name.upper() == "UTC":
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown ScheduleExpressionTimezone {name!r}") from None


# --------------------------------------------------------------------------- the schedule of one event


@dataclass
class ScheduleSpec:
    """One `Schedule` / `ScheduleV2` event of a function, resolved from the template."""

    function: str
    event_name: str
    kind: str  # Schedule | ScheduleV2
    expression: Expression
    enabled: bool
    arn: str
    input: Any = None  # the parsed Input JSON; None: the scheduled-event envelope
    tz: ZoneInfo | None = None

    @property
    def label(self) -> str:
        return f"{self.function}/{self.event_name}"

    def next_after(self, moment: datetime, anchor: datetime, speedup: float = 1.0) -> datetime | None:
        if isinstance(self.expression, Rate):
            return self.expression.next_after(moment, anchor, speedup)
        return self.expression.next_after(moment, self.tz)

    def event(self, fired_at: datetime) -> Any:
        """What the function receives: the Input when given (nothing else, as AWS does), else the
        scheduled-event envelope."""
        if self.input is not None:
            return json.loads(json.dumps(self.input))
        return scheduled_event(
            self.arn, fired_at, source="aws.scheduler" if self.kind == "ScheduleV2" else "aws.events"
        )


def scheduled_event(rule_arn: str, fired_at: datetime, source: str = "aws.events") -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": source,
        "account": ACCOUNT_ID,
        "time": fired_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


def schedule_spec(
    stack_name: str, function: str, event_name: str, kind: str, props: dict[str, Any]
) -> ScheduleSpec:
    """Build a ScheduleSpec from an event's resolved Properties (raises ScheduleError)."""
    if kind == "Schedule":
        text = props.get("Schedule")
        enabled = (
            _truthy(props.get("Enabled", True)) and str(props.get("State", "ENABLED")).upper() != "DISABLED"
        )
        name = str(props.get("Name") or f"{stack_name}-{function}{event_name}")
        arn = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{name}"
    else:
        text = props.get("ScheduleExpression")
        enabled = str(props.get("State", "ENABLED")).upper() != "DISABLED"
        name = str(props.get("Name") or f"{stack_name}-{function}{event_name}")
        group = str(props.get("GroupName") or "default")
        arn = f"arn:aws:scheduler:{REGION}:{ACCOUNT_ID}:schedule/{group}/{name}"
    if not isinstance(text, str):
        raise ScheduleError(f"{function}/{event_name}: no schedule expression")
    expression = parse_expression(text)
    if isinstance(expression, At) and kind == "Schedule":
        raise ScheduleError(f"{function}/{event_name}: at() is only valid for ScheduleV2 events")
    raw_input = props.get("Input")
    parsed_input: Any = None
    if raw_input is not None:
        try:
            parsed_input = json.loads(raw_input) if isinstance(raw_input, str) else raw_input
        except ValueError:
            raise ScheduleError(f"{function}/{event_name}: Input must be valid JSON text") from None
    tz = timezone(props.get("ScheduleExpressionTimezone")) if kind == "ScheduleV2" else None
    return ScheduleSpec(function, event_name, kind, expression, enabled, arn, parsed_input, tz)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "")
    return bool(value)


# --------------------------------------------------------------------------- firing


class Scheduler:
    """Fires every enabled schedule at its times, each invocation in its own thread (EventBridge
    invokes asynchronously: a slow run does not hold the next one back)."""

    def __init__(
        self,
        schedules: list[ScheduleSpec],
        invoke: Callable[[str, Any], InvokeResult],
        *,
        speedup: float = 1.0,
        observers: list[Observer] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if speedup <= 0:
            raise ScheduleError("the schedule speed-up must be positive")
        self.schedules = schedules
        self.invoke = invoke
        self.speedup = speedup
        self.observers = observers if observers is not None else []
        self.clock = clock
        self.anchor = clock()
        self.next_fire: dict[str, datetime | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._runs: list[threading.Thread] = []

    def start(self) -> None:
        now = self.clock()
        for spec in self.schedules:
            if spec.enabled:
                self.next_fire[spec.label] = spec.next_after(now, self.anchor, self.speedup)
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in [self._thread, *self._runs]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        by_label = {spec.label: spec for spec in self.schedules}
        while not self._stop.is_set():
            pending = {k: v for k, v in self.next_fire.items() if v is not None}
            if not pending:
                self._stop.wait(3600)
                continue
            label, when = min(pending.items(), key=lambda item: item[1])
            delay = (when - self.clock()).total_seconds()
            if delay > 0:
                self._stop.wait(min(delay, 30.0))  # re-check now and then: the clock may jump
                continue
            spec = by_label[label]
            self.next_fire[label] = spec.next_after(max(when, self.clock()), self.anchor, self.speedup)
            thread = threading.Thread(
                target=self.fire, args=(spec, when), name=f"schedule-{label}", daemon=True
            )
            thread.start()
            self._runs = [t for t in self._runs if t.is_alive()] + [thread]

    def fire(
        self, spec: ScheduleSpec, fired_at: datetime | None = None, *, manual: bool = False
    ) -> Invocation:
        """Invoke the function with the schedule's event now."""
        moment = fired_at or self.clock()
        event = spec.event(moment)
        outcome = self.invoke(spec.function, event)
        how = "triggered by hand" if manual else spec.expression.text
        log.info(
            "[%s] schedule %s (%s) -> %s (%s)",
            spec.function,
            spec.event_name,
            how,
            "ok" if outcome.ok else f"error {type(outcome.error).__name__}",
            outcome.describe(),
        )
        invocation = Invocation("schedule", spec.label, spec.function, event, outcome)
        for observer in self.observers:
            observer(invocation)
        return invocation
