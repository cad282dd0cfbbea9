"""Prometheus metrics in the text exposition format, with no dependency.

Each role keeps its counters, gauges and histograms in one :class:`Metrics` registry and
serves them at ``/metrics``. Labels are plain keyword arguments.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

LabelKey = tuple[tuple[str, str], ...]

DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _key(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


def _fmt_labels(key: LabelKey, extra: Iterable[tuple[str, str]] = ()) -> str:
    items = [*key, *extra]
    if not items:
        return ""
    body = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in items
    )
    return "{" + body + "}"


def _num(value: float) -> str:
    """A sample value at full precision (``:g`` would print 1795471502.2 as 1.79547e+09)."""
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class Counter:
    name: str
    help: str
    values: dict[LabelKey, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = _key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_fmt_labels(k)} {_num(v)}" for k, v in sorted(self.values.items())]
        return lines


@dataclass
class Gauge:
    name: str
    help: str
    values: dict[LabelKey, float] = field(default_factory=dict)
    callback: Callable[[], dict[LabelKey, float]] | None = None

    def set(self, value: float, **labels: str) -> None:
        self.values[_key(labels)] = value

    def render(self) -> list[str]:
        values = dict(self.values)
        if self.callback is not None:
            values.update(self.callback())
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        lines += [f"{self.name}{_fmt_labels(k)} {_num(v)}" for k, v in sorted(values.items())]
        return lines


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    counts: dict[LabelKey, list[int]] = field(default_factory=dict)
    sums: dict[LabelKey, float] = field(default_factory=dict)

    def observe(self, value: float, **labels: str) -> None:
        key = _key(labels)
        counts = self.counts.setdefault(key, [0] * (len(self.buckets) + 1))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[key] = self.sums.get(key, 0.0) + value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, counts in sorted(self.counts.items()):
            running = 0
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f"{self.name}_bucket{_fmt_labels(key, [('le', le)])} {running}")
            lines.append(f"{self.name}_sum{_fmt_labels(key)} {_num(self.sums[key])}")
            lines.append(f"{self.name}_count{_fmt_labels(key)} {running}")
        return lines


class Metrics:
    """One registry per process role."""

    def __init__(self) -> None:
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}

    def counter(self, name: str, help: str) -> Counter:
        metric = self._metrics.setdefault(name, Counter(name, help))
        assert isinstance(metric, Counter)
        return metric

    def gauge(self, name: str, help: str) -> Gauge:
        metric = self._metrics.setdefault(name, Gauge(name, help))
        assert isinstance(metric, Gauge)
        return metric

    def histogram(self, name: str, help: str) -> Histogram:
        metric = self._metrics.setdefault(name, Histogram(name, help))
        assert isinstance(metric, Histogram)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines += metric.render()
        return "\n".join(lines) + "\n"
