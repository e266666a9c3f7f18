"""The overview's per-day charts (runs, success rate, cost over 30 days) as inline SVG
geometry: pure functions from the day rows of the store to bars the template draws.

Days are UTC days since the epoch (``created_at // 86400``), as the store groups them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from mwai.model import DayCost, DayCount

DAY_S = 86400
DAYS = 30
WIDTH = 300  # SVG user units; the CSS scales the chart to its box
HEIGHT = 80
GAP = 2


@dataclass(frozen=True, slots=True)
class Day:
    day: int
    runs: int
    completed: int
    failed: int  # failed or cancelled
    cost_usd: float

    @property
    def label(self) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(self.day * DAY_S))

    @property
    def success_rate(self) -> float | None:
        """Completed among the finished runs (None: nothing finished that day)."""
        finished = self.completed + self.failed
        return self.completed / finished if finished else None


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # the tooltip and the accessible text of the bar


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    summary: str  # the chart in one sentence, for readers without the picture
    bars: tuple[Bar, ...]
    width: int = WIDTH
    height: int = HEIGHT


def days(counts: Sequence[DayCount], costs: Sequence[DayCost], today: int) -> list[Day]:
    """The last DAYS days, oldest first, days without runs included."""
    first = today - DAYS + 1
    runs = dict.fromkeys(range(first, today + 1), 0)
    completed = dict(runs)
    failed = dict(runs)
    for row in counts:
        if row.day not in runs:
            continue
        runs[row.day] += row.count
        if row.status == "completed":
            completed[row.day] += row.count
        elif row.status in ("failed", "cancelled"):
            failed[row.day] += row.count
    cost = {row.day: float(row.cost_usd or 0.0) for row in costs}
    return [Day(day, runs[day], completed[day], failed[day], cost.get(day, 0.0))
            for day in range(first, today + 1)]


def _bars(values: Sequence[float | None], titles: Sequence[str], top: float) -> tuple[Bar, ...]:
    step = WIDTH / max(1, len(values))
    bars = []
    for index, (value, title) in enumerate(zip(values, titles, strict=True)):
        height = 0.0 if value is None or top <= 0 else HEIGHT * value / top
        if value:
            height = max(height, 1.0)  # a small day stays visible
        bars.append(Bar(x=round(index * step + GAP / 2, 2), y=round(HEIGHT - height, 2),
                        width=round(step - GAP, 2), height=round(height, 2), title=title))
    return tuple(bars)


def charts(series: Sequence[Day]) -> list[Chart]:
    runs = [float(d.runs) for d in series]
    rates = [d.success_rate for d in series]
    costs = [d.cost_usd for d in series]
    total_runs = sum(d.runs for d in series)
    done = sum(d.completed for d in series)
    ended = done + sum(d.failed for d in series)
    rate_text = f"{100 * done / ended:.0f} % succeeded" if ended else "no finished run"
    return [
        Chart("Runs per day", f"{total_runs:,} runs in {len(series)} days",
              _bars(runs, [f"{d.label}: {d.runs:,} runs" for d in series], max(runs or [0]))),
        Chart("Success rate", rate_text,
              _bars(rates, [f"{d.label}: " + ("no finished run" if d.success_rate is None else
                                              f"{100 * d.success_rate:.0f} % of "
                                              f"{d.completed + d.failed:,} finished")
                            for d in series], 1.0)),
        Chart("Cost per day", f"${sum(costs):,.2f} in {len(series)} days",
              _bars(costs, [f"{d.label}: ${d.cost_usd:,.4f}" for d in series],
                    max(costs or [0]))),
    ]
