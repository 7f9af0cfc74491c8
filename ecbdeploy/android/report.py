"""bench-android results: one record per device × model × delegate × threads, kept on disk as they come.

`ResultStore` rewrites OUT.json, OUT.csv and OUT.md atomically after every record, so an
interrupted or crashed run leaves every figure measured so far. `--compare` reads an older
OUT.json and flags regressions.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from ..errors import EcbDeployError
from ..fsutil import write_text_atomic
from .adb import DeviceFacts

FORMAT_VERSION = 1


@dataclass
class BenchResult:
    device: str  # adb serial
    device_id: str  # ro.serialno: matches the same phone over USB and Wi-Fi
    model: str  # file name (pushed under that name)
    model_sha256: str
    delegate: str  # cpu | gpu | nnapi
    threads: int
    status: str = "ok"  # ok | failed
    error: str | None = None
    avg_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    count: int | None = None
    first_us: float | None = None
    warmup_avg_us: float | None = None
    init_us: float | None = None
    peak_memory_mb: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    delegate_name: str | None = None
    delegated_nodes: int | None = None
    total_nodes: int | None = None
    output_format: str | None = None  # tflite | litert2
    seconds: float | None = None  # wall time of the adb call
    log: str | None = None  # raw benchmark_model output, relative to the JSON
    baseline_avg_us: float | None = None
    change: float | None = None  # (avg - baseline) / baseline
    regression: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def key(self) -> tuple:
        return (self.device_id, self.model, self.delegate, self.threads)


CSV_FIELDS = [f.name for f in fields(BenchResult)]


def output_paths(json_out: str | Path) -> dict[str, Path]:
    """OUT.json, OUT.csv, OUT.md (and the OUT_logs folder) from --json OUT or OUT.json."""
    path = Path(json_out)
    stem = path.with_suffix("") if path.suffix == ".json" else path
    return {"json": stem.with_name(stem.name + ".json"), "csv": stem.with_name(stem.name + ".csv"),
            "md": stem.with_name(stem.name + ".md"), "logs": stem.with_name(stem.name + "_logs")}


class Baseline:
    """Average latencies of an older bench-android JSON, for --compare."""

    def __init__(self, path: str | Path, threshold: float):
        self.path = Path(path)
        self.threshold = threshold
        try:
            doc = json.loads(self.path.read_text())
            results = [r for r in doc["results"] if isinstance(r, dict)]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EcbDeployError(f"--compare {path}: not a bench-android JSON ({e})") from None
        self.avg_us = {}
        for r in results:
            if r.get("status") == "ok" and isinstance(r.get("avg_us"), (int, float)) and r["avg_us"] > 0:
                key = (r.get("device_id") or r.get("device"), r.get("model"), r.get("delegate"), r.get("threads"))
                self.avg_us[key] = float(r["avg_us"])

    def judge(self, result: BenchResult) -> None:
        """Fill the comparison fields of `result` (a failure where the baseline worked is a regression)."""
        old = self.avg_us.get(result.key())
        if old is None:
            return
        result.baseline_avg_us = old
        if not result.ok:
            result.regression = True
            return
        result.change = (result.avg_us - old) / old
        result.regression = result.change > self.threshold


class ResultStore:
    """Collects results from the device threads and rewrites the three output files after each."""

    def __init__(self, json_out: str | Path, settings: dict, devices: list[DeviceFacts],
                 baseline: Baseline | None = None):
        self.paths = output_paths(json_out)
        self.settings = settings
        self.devices = devices
        self.device_order = {d.serial: i for i, d in enumerate(devices)}
        self.baseline = baseline
        self.started = _now()
        self.finished: str | None = None
        self._results: list[tuple[tuple[int, int], BenchResult]] = []
        self._lock = threading.Lock()

    @property
    def results(self) -> list[BenchResult]:
        """In plan order: device by device, then model × delegate × threads."""
        with self._lock:
            return self._ordered()

    def _ordered(self) -> list[BenchResult]:
        return [r for _, r in sorted(self._results, key=lambda item: item[0])]

    def add(self, result: BenchResult, plan_index: int) -> None:
        if self.baseline is not None:
            self.baseline.judge(result)
        with self._lock:
            self._results.append(((self.device_order.get(result.device, 0), plan_index), result))
        self.write()

    def finish(self) -> None:
        self.finished = _now()
        self.write()

    def write(self) -> None:
        with self._lock:  # one writer at a time: each file is always one whole snapshot
            results = self._ordered()
            write_text_atomic(self.paths["json"], json.dumps(self._document(results), indent=2) + "\n")
            write_text_atomic(self.paths["csv"], to_csv(results))
            write_text_atomic(self.paths["md"], to_markdown(results, self.devices, self.baseline))

    def _document(self, results: list[BenchResult]) -> dict:
        return {
            "tool": "ecbdeploy bench-android", "format_version": FORMAT_VERSION,
            "started": self.started, "finished": self.finished, "complete": self.finished is not None,
            "settings": self.settings,
            "devices": [asdict(d) for d in self.devices],
            "compare": ({"baseline": str(self.baseline.path), "threshold": self.baseline.threshold}
                        if self.baseline else None),
            "results": [asdict(r) for r in results],
        }


def to_csv(results: list[BenchResult]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow(asdict(r))
    return buf.getvalue()


TABLE_HEADERS = ["device", "model", "delegate", "threads", "avg ms", "min ms", "std ms", "peak MB",
                 "delegated", "vs old", "status"]


def table_rows(results: list[BenchResult], error_width: int | None = None) -> list[list[str]]:
    rows = []
    for r in results:
        error = r.error or ""
        if error_width and len(error) > error_width:
            error = error[:error_width - 3] + "..."
        rows.append([
            r.device, r.model, r.delegate, str(r.threads), _ms(r.avg_us), _ms(r.min_us), _ms(r.std_us),
            _num(r.peak_memory_mb), f"{r.delegated_nodes}/{r.total_nodes}" if r.total_nodes else "-",
            _versus(r), "ok" if r.ok else f"FAILED: {error}",
        ])
    return rows


def format_table(results: list[BenchResult]) -> str:
    """Plain-text table for the terminal."""
    rows = [TABLE_HEADERS, *table_rows(results, error_width=60)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADERS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def to_markdown(results: list[BenchResult], devices: list[DeviceFacts], baseline: Baseline | None) -> str:
    lines = ["# bench-android results", "", "| serial | device | SoC | Android | ABI |", "|---|---|---|---|---|"]
    lines += [f"| {_md(d.serial)} | {_md(d.manufacturer)} {_md(d.model)} | {_md(d.soc)} | {_md(d.android)} "
              f"| {_md(d.abi)} |" for d in devices]
    lines += ["", "| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in table_rows(results)]
    if baseline is not None:
        lines += ["", (f"Compared with `{baseline.path}`: REGRESSION marks a run more than "
                       f"{baseline.threshold:.0%} slower on average, or failing where it worked.")]
    return "\n".join(lines) + "\n"


def _versus(r: BenchResult) -> str:
    if r.baseline_avg_us is None:
        return "-"
    if r.change is None:
        return "REGRESSION (now failing)" if r.regression else "-"
    text = f"{r.change:+.1%}"
    return f"{text} REGRESSION" if r.regression else text


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
