"""Read what TFLite / LiteRT `benchmark_model` prints: text in, numbers out (no I/O).

Two formats exist (samples in tests/data/benchmark_model/):
- classic TFLite: `count=.. avg=..` stat lines, `Inference timings in us: ...`, memory lines;
- LiteRT 2.x: a `===== BENCHMARK RESULTS =====` block with values in ms.
Any line may carry an `INFO: ` level prefix or a logcat prefix. All times come out in microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import EcbDeployError

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"

# `01-02 12:34:56.789  1234  1234 I tflite  : msg` (logcat -v threadtime, optionally with a year)
_LOGCAT_THREADTIME = re.compile(
    r"^(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+([VDIWEF])\s+[^:]*?\s*:\s?")
# `I/tflite  ( 1234): msg`, `I/tflite: msg`, `01-02 12:34:56.789 I/tflite( 1234): msg`
_LOGCAT_BRIEF = re.compile(
    r"^(?:(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+)?([VDIWEF])/[^:(]*(?:\(\s*\d+\))?\s*:\s?")
_LEVEL = re.compile(r"^(VERBOSE|DEBUG|INFO|WARNING|ERROR|FATAL): ")
_ERROR_LEVELS = {"E", "F", "ERROR", "FATAL"}

_STAT_PAIR = re.compile(rf"(\w+)=({_NUM})")
_TIMINGS = re.compile(r"^Inference timings in us:")
_TIMING_FIELDS = {
    "init_us": re.compile(rf"\bInit: ({_NUM})"),
    "first_us": re.compile(rf"\bFirst inference: ({_NUM})"),
    "warmup_avg_us": re.compile(rf"\bWarmup \(avg\): ({_NUM})"),
    "avg_us": re.compile(rf"\bInference \(avg\): ({_NUM})"),
}
_MEMORY_DELTA = re.compile(rf"^Memory footprint delta.*\(MB\):\s*init=({_NUM})\s+overall=({_NUM})")
_PEAK_MEMORY = re.compile(rf"peak memory footprint \(MB\)[^:]*:\s*({_NUM})", re.IGNORECASE)
_DELEGATION = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\) node"
    r"(?:, yielding (\d+) partitions)?")

_LITERT2_START = re.compile(r"^=+ BENCHMARK RESULTS =+$")
_LITERT2_END = re.compile(r"^=+$")
_LITERT2_LINE = re.compile(rf"^(?P<key>[A-Za-z][\w ()]*?):\s*(?P<value>{_NUM})\s*(?P<unit>ms|us|s|MB)?"
                           r"(?:\s*\((?P<runs>\d+) runs\))?\s*$")
_LITERT2_TIMES = {
    "Model initialization": "init_us", "Warmup (first)": "first_us", "Warmup (avg)": "warmup_avg_us",
    "Inference (avg)": "avg_us", "Inference (min)": "min_us", "Inference (max)": "max_us",
    "Inference (std)": "std_us", "Inference (p5)": "p5_us", "Inference (median)": "median_us",
    "Inference (p50)": "median_us", "Inference (p95)": "p95_us",
}
_LITERT2_MEMORY = {"Init footprint": "memory_init_mb", "Peak memory": "peak_memory_mb"}
_TO_US = {"us": 1.0, "ms": 1e3, "s": 1e6}


class UnparsableOutput(EcbDeployError):
    """The text holds no inference timing (the tool failed, or printed something unexpected)."""


@dataclass(frozen=True)
class Delegation:
    """One `Replacing N out of M node(s) with delegate (NAME)` line."""

    delegate: str
    replaced: int
    total: int
    partitions: int | None


@dataclass
class BenchmarkOutput:
    format: str  # "tflite" (classic) or "litert2"
    avg_us: float
    count: int | None = None
    min_us: float | None = None
    max_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    first_us: float | None = None
    warmup_avg_us: float | None = None
    init_us: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None
    delegations: list[Delegation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def delegation_for(self, name_hint: str) -> Delegation | None:
        """The delegation whose name contains `name_hint` (any case), else the first one, else None."""
        for d in self.delegations:
            if name_hint.lower() in d.delegate.lower():
                return d
        return self.delegations[0] if self.delegations else None


def split_prefix(line: str) -> tuple[str, str]:
    """(level, message) of one line: logcat and `INFO: ` prefixes removed, level '' if none."""
    line = line.rstrip("\r\n")
    level = ""
    for logcat in (_LOGCAT_THREADTIME, _LOGCAT_BRIEF):
        m = logcat.match(line)
        if m:
            level, line = m.group(1), line[m.end():]
            break
    m = _LEVEL.match(line)
    if m:
        level, line = m.group(1), line[m.end():]
    return level, line.strip()


def error_lines(text: str) -> list[str]:
    return [msg for level, msg in map(split_prefix, text.splitlines()) if level in _ERROR_LEVELS and msg]


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Numbers from one `benchmark_model` run; UnparsableOutput if it reports no inference time."""
    messages = [msg for _, msg in map(split_prefix, text.splitlines())]
    values = _parse_litert2_block(messages)
    fmt = "litert2" if values is not None else "tflite"
    if values is None:
        values = _parse_classic(messages)
    values.update(_parse_memory(messages))
    if values.get("avg_us") is None:
        raise UnparsableOutput(_why_unparsable(text))
    return BenchmarkOutput(format=fmt, delegations=_parse_delegations(messages), errors=error_lines(text),
                           **values)


def _parse_classic(messages: list[str]) -> dict:
    values: dict = {}
    # The last `count=` line is the measured run; earlier ones are the warm-up. Lines that merely
    # contain `count=` (op-profiling `Timings (microseconds): count=...`) are not run statistics.
    stat_lines = [m for m in messages if m.startswith("count=")]
    if stat_lines:
        values.update(_parse_stat_line(stat_lines[-1]))
    for msg in messages:
        if _TIMINGS.match(msg):
            for key, pattern in _TIMING_FIELDS.items():
                m = pattern.search(msg)
                if m:
                    values[key] = float(m.group(1))
    return values


def _parse_stat_line(msg: str) -> dict:
    pairs = {k: float(v) for k, v in _STAT_PAIR.findall(msg)}
    count = int(pairs.get("count", 0))
    if count == 0:
        return {}
    stats = {"count": count}
    if "avg" in pairs:
        stats.update(avg_us=pairs["avg"], min_us=pairs.get("min"), max_us=pairs.get("max"),
                     std_us=pairs.get("std"), p5_us=pairs.get("p5"), median_us=pairs.get("median"),
                     p95_us=pairs.get("p95"))
    elif "curr" in pairs:
        # `count=1 curr=X` and `count=N curr=X(all same)`: every run took X.
        x = pairs["curr"]
        stats.update(avg_us=x, min_us=x, max_us=x, std_us=0.0)
    return stats


def _parse_litert2_block(messages: list[str]) -> dict | None:
    try:
        start = next(i for i, m in enumerate(messages) if _LITERT2_START.match(m))
    except StopIteration:
        return None
    values: dict = {}
    for msg in messages[start + 1:]:
        if _LITERT2_END.match(msg):
            break
        m = _LITERT2_LINE.match(msg)
        if not m:
            continue
        key, value, unit = m.group("key"), float(m.group("value")), m.group("unit")
        if key in _LITERT2_TIMES:
            # The block prints `Inference (std): 0.39` without a unit; its other times are in ms.
            values[_LITERT2_TIMES[key]] = round(value * _TO_US[unit or "ms"], 6)
            if key == "Inference (avg)" and m.group("runs"):
                values["count"] = int(m.group("runs"))
        elif key in _LITERT2_MEMORY:
            values[_LITERT2_MEMORY[key]] = value
    return values


def _parse_memory(messages: list[str]) -> dict:
    values = {}
    for msg in messages:
        m = _MEMORY_DELTA.match(msg)
        if m:
            values["memory_init_mb"], values["memory_overall_mb"] = float(m.group(1)), float(m.group(2))
        m = _PEAK_MEMORY.search(msg)
        if m:
            values["peak_memory_mb"] = float(m.group(1))
    return values


def _parse_delegations(messages: list[str]) -> list[Delegation]:
    found = []
    for msg in messages:
        m = _DELEGATION.search(msg)
        if m:
            partitions = int(m.group(4)) if m.group(4) else None
            found.append(Delegation(m.group(3), int(m.group(1)), int(m.group(2)), partitions))
    return found


def _why_unparsable(text: str) -> str:
    errors = error_lines(text)
    if errors:
        return "; ".join(errors[:3])
    last = next((msg for _, msg in map(split_prefix, reversed(text.splitlines())) if msg), "")
    if not last:
        return "benchmark_model printed nothing"
    return f"no inference timing in benchmark_model output (last line: {last[:200]!r})"
