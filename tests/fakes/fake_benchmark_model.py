"""TEST DOUBLE for TFLite's `benchmark_model`: prints real-format output, measures nothing. Tests only.

Behaviour follows the model file name (so one run can mix outcomes):
    *crash*    prints the start, then dies by SIGSEGV (the device shell reports exit 139)
    *fail*     the tool's own failure output, exit 1
    *garbage*  text that holds no timing, exit 0
    *hang*     sleeps until killed (for time-out tests)
    *lose*     emulates an unplugged phone: makes <cwd>/LOST for the fake adb, exits 255 mid-output
    *litert2*  the LiteRT 2.x results block
    otherwise  classic TFLite output; --use_gpu / --use_nnapi add that delegate's coverage line.
A missing --graph file gives the tool's "Could not open" failure. Timings: avg = 24000 us
× $FAKE_BENCH_SCALE / num_threads. Every call is appended to <cwd>/benchmark_calls.jsonl.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    with open("benchmark_calls.jsonl", "a") as f:
        f.write(json.dumps(argv) + "\n")
    graph = flags.get("graph", "")
    name = Path(graph).name
    say = _printer()
    say("STARTING!")
    say(f"Graph: [{graph}]")
    if not Path(graph).is_file():
        say(f"Could not open '{graph}'.", "ERROR")
        say(f"Failed to mmap model {graph}", "ERROR")
        say("Benchmarking failed.", "ERROR")
        return 1
    threads = int(flags.get("num_threads", "1"))
    avg = round(24000 * float(os.environ.get("FAKE_BENCH_SCALE", "1")) / threads, 1)
    if "crash" in name:
        say(f"Loaded model {graph}")
        sys.stderr.flush()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the device folder
        os.kill(os.getpid(), signal.SIGSEGV)
    if "fail" in name:
        say("Failed to apply the delegate.", "ERROR")
        say("Benchmarking failed.", "ERROR")
        return 1
    if "garbage" in name:
        print("Segmentation fault?? \x00\x01 random words, no numbers here", file=sys.stderr)
        return 0
    if "hang" in name:
        time.sleep(60)
        return 0
    if "lose" in name:
        Path("LOST").touch()
        return 255
    if "litert2" in name:
        _litert2(avg / 1000)
        return 0
    _classic(say, graph, flags, avg)
    return 0


def _printer():
    def say(message: str, level: str = "INFO") -> None:
        print(f"{level}: {message}", file=sys.stderr)
    return say


def _classic(say, graph: str, flags: dict, avg: float) -> None:
    say(f"Loaded model {graph}")
    total = 13
    if flags.get("use_gpu") == "true":
        say("Created TensorFlow Lite delegate for GPU.")
        say(f"Replacing {total} out of {total} node(s) with delegate (TfLiteGpuDelegateV2) node, "
            "yielding 1 partitions for the whole graph.")
    elif flags.get("use_nnapi") == "true":
        say("Created TensorFlow Lite delegate for NNAPI.")
        say(f"Replacing 11 out of {total} node(s) with delegate (TfLiteNnapiDelegate) node, "
            "yielding 2 partitions for the whole graph.")
    else:
        say("Created TensorFlow Lite XNNPACK delegate for CPU.")
        say(f"Replacing {total} out of {total} node(s) with delegate (TfLiteXNNPackDelegate) node, "
            "yielding 1 partitions for the whole graph.")
    say("Initialized session in 1.204ms.")
    say("Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if "
        "exceeding 150 seconds.")
    say(f"count=5 first={avg * 1.3:g} curr={avg:g} min={avg * 0.98:g} max={avg * 1.3:g} avg={avg * 1.05:g} std=90")
    say("")
    runs = flags.get("num_runs", "50")
    say(f"Running benchmark for at least {runs} iterations and at least 1 seconds but terminate if "
        "exceeding 150 seconds.")
    say(f"count={runs} first={avg:g} curr={avg:g} min={avg * 0.98:g} max={avg * 1.04:g} avg={avg:g} std=40 "
        f"p5={avg * 0.99:g} median={avg:g} p95={avg * 1.02:g}")
    say("")
    say(f"Inference timings in us: Init: 1204, First inference: {avg * 1.3:g}, Warmup (avg): {avg * 1.05:g}, "
        f"Inference (avg): {avg:g}")
    say("Memory footprint delta from the start of the tool (MB): init=2.75391 overall=13.6133")
    if flags.get("report_peak_memory_footprint") == "true":
        say("Overall peak memory footprint (MB) via periodic monitoring: 57.3867")


def _litert2(avg_ms: float) -> None:
    print("========== BENCHMARK RESULTS ==========", file=sys.stderr)
    for line in ("Model initialization: 3.41 ms", f"Warmup (first): {avg_ms * 1.2:.2f} ms",
                 f"Warmup (avg): {avg_ms * 1.05:.2f} ms (5 runs)", f"Inference (avg): {avg_ms:.2f} ms (50 runs)",
                 f"Inference (min): {avg_ms * 0.98:.2f} ms", f"Inference (max): {avg_ms * 1.08:.2f} ms",
                 "Inference (std): 0.39", "Init footprint: 2.81 MB", "Peak memory: 14.02 MB"):
        print(line, file=sys.stderr)
    print("========================================", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
