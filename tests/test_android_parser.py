"""The benchmark_model output parser, on the shared format samples and on edge cases from NOTES §5."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecbdeploy.android.benchmark_output import (
    BenchmarkOutput,
    Delegation,
    UnparsableOutput,
    parse_benchmark_output,
    split_prefix,
)

REPO = Path(__file__).resolve().parents[1]
IN_REPO = REPO / "tests" / "data" / "benchmark_model"
SHARED = REPO.parent / "shared" / "fixtures" / "benchmark_model"  # where CI keeps the originals
FIXTURES = ["litert2_cpu.txt", "tflite_cpu_classic.txt", "tflite_failure.txt", "tflite_gpu_percentiles.txt",
            "tflite_nnapi_partial_slow.txt"]


def fixture(name: str) -> str:
    """The in-repo copy first; the shared original if the copy is missing."""
    path = IN_REPO / name if (IN_REPO / name).exists() else SHARED / name
    return path.read_text()


@pytest.mark.parametrize("name", FIXTURES)
def test_in_repo_copies_match_the_shared_fixtures(name):
    if not (SHARED / name).exists():
        pytest.skip(f"no shared fixtures at {SHARED}")
    assert (IN_REPO / name).read_text() == (SHARED / name).read_text()


def test_every_fixture_is_covered_here():
    assert sorted(p.name for p in IN_REPO.glob("*.txt")) == FIXTURES
    if SHARED.is_dir():
        assert sorted(p.name for p in SHARED.glob("*.txt")) == FIXTURES


# ---- the fixture files ---------------------------------------------------------------------------

def test_classic_cpu():
    out = parse_benchmark_output(fixture("tflite_cpu_classic.txt"))
    assert out == BenchmarkOutput(
        format="tflite", avg_us=23402.8, count=50, min_us=22987.0, max_us=24730.0, std_us=311.0,
        first_us=31022.0, warmup_avg_us=23944.5, init_us=1204.0, memory_init_mb=2.75391,
        memory_overall_mb=13.6133, peak_memory_mb=None, delegations=[], errors=[])


def test_gpu_with_percentiles_info_prefix_coverage_and_peak_memory():
    out = parse_benchmark_output(fixture("tflite_gpu_percentiles.txt"))
    assert (out.format, out.avg_us, out.count) == ("tflite", 7702.91, 130)  # the measured run, not the warm-up
    assert (out.min_us, out.max_us, out.std_us) == (7581.0, 8964.0, 156.0)
    assert (out.p5_us, out.median_us, out.p95_us) == (7603.0, 7688.0, 7898.0)
    assert (out.first_us, out.warmup_avg_us, out.init_us) == (14211.0, 7815.23, 412337.0)
    assert (out.memory_init_mb, out.memory_overall_mb, out.peak_memory_mb) == (41.2109, 48.9961, 57.3867)
    assert out.delegations == [Delegation("TfLiteGpuDelegateV2", 13, 13, 1)]
    assert out.delegation_for("gpu") == Delegation("TfLiteGpuDelegateV2", 13, 13, 1)
    assert out.errors == []


def test_nnapi_partial_coverage_exponent_values_and_count_1_warmup():
    out = parse_benchmark_output(fixture("tflite_nnapi_partial_slow.txt"))
    assert (out.avg_us, out.count) == (1203020.0, 3)
    assert (out.min_us, out.max_us, out.std_us) == (1198420.0, 1209334.0, 4571.0)
    assert (out.warmup_avg_us, out.first_us, out.init_us) == (1324510.0, 1324511.0, 2310440.0)
    assert out.delegation_for("nnapi") == Delegation("TfLiteNnapiDelegate", 11, 13, 2)
    assert (out.peak_memory_mb, out.memory_overall_mb) == (None, None)


def test_litert2_block_in_ms_becomes_us():
    out = parse_benchmark_output(fixture("litert2_cpu.txt"))
    assert out == BenchmarkOutput(
        format="litert2", avg_us=23180.0, count=50, min_us=22740.0, max_us=25060.0, std_us=390.0,
        first_us=28770.0, warmup_avg_us=24020.0, init_us=3410.0, memory_init_mb=2.81, peak_memory_mb=14.02)


def test_failure_is_unparsable_and_says_why():
    with pytest.raises(UnparsableOutput) as e:
        parse_benchmark_output(fixture("tflite_failure.txt"))
    assert str(e.value) == ("Could not open '/data/local/tmp/ecbdeploy/missing.tflite'.; "
                            "Failed to mmap model /data/local/tmp/ecbdeploy/missing.tflite; Benchmarking failed.")


# ---- edge cases ----------------------------------------------------------------------------------

CLASSIC_TAIL = """\
count=3 first=25000 curr=24000 min=24000 max=25000 avg=24500 std=400
Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=23371 curr=23515 min=22987 max=24730 avg=23402.8 std=311
Inference timings in us: Init: 1204, First inference: 31022, Warmup (avg): 23944.5, Inference (avg): 23402.8
Memory footprint delta from the start of the tool (MB): init=2.75391 overall=13.6133
Overall peak memory footprint (MB) via periodic monitoring: 57.3867
"""


@pytest.mark.parametrize("prefix", [
    "12-04 20:01:02.345  4321  4321 I tflite  : ",  # logcat -v threadtime
    "2024-12-04 20:01:02.345  4321  4321 I tflite  : ",  # ... with -v year
    "I/tflite  ( 4321): ",  # logcat -v brief
    "I/tflite: ",  # logcat -v tag
    "12-04 20:01:02.345 I/tflite( 4321): ",  # logcat -v time
    "12-04 20:01:02.345  4321  4321 I tflite  : INFO: ",  # logcat around the tool's own prefix
])
def test_logcat_prefixes_are_stripped(prefix):
    text = "".join(prefix + line + "\n" for line in CLASSIC_TAIL.splitlines())
    out = parse_benchmark_output(text)
    assert (out.avg_us, out.count, out.min_us, out.first_us) == (23402.8, 50, 22987.0, 31022.0)
    assert (out.memory_overall_mb, out.peak_memory_mb) == (13.6133, 57.3867)


def test_logcat_error_lines_are_errors():
    text = ("E/tflite  ( 4321): Failed to apply GPU delegate.\n"
            "12-04 20:01:02.345  4321  4321 E tflite  : ERROR: Benchmarking failed.\n")
    with pytest.raises(UnparsableOutput, match=r"^Failed to apply GPU delegate.; Benchmarking failed.$"):
        parse_benchmark_output(text)


def test_split_prefix():
    assert split_prefix("INFO: count=1 curr=5\r\n") == ("INFO", "count=1 curr=5")
    assert split_prefix("I/tflite  ( 4321): ERROR: x") == ("ERROR", "x")
    assert split_prefix("plain line") == ("", "plain line")


def test_all_same_means_every_run_took_that_long():
    out = parse_benchmark_output("INFO: count=20 curr=23000(all same)\n")
    assert (out.avg_us, out.min_us, out.max_us, out.std_us, out.count) == (23000.0, 23000.0, 23000.0, 0.0, 20)


def test_count_1_without_timings_line_uses_curr():
    out = parse_benchmark_output("count=1 curr=1324511\n\ncount=1 curr=1.30411e+06\n")
    assert (out.avg_us, out.min_us, out.max_us, out.count) == (1304110.0, 1304110.0, 1304110.0, 1)


def test_exponent_values_in_the_timings_line_win():
    text = ("count=4 first=3.6e+06 curr=3.5e+06 min=3.4e+06 max=3.6e+06 avg=3.5e+06 std=7000\n"
            "Inference timings in us: Init: 2.31044e+06, First inference: 3.6e+06, "
            "Warmup (avg): 3.6e+06, Inference (avg): 3.51239e+06\n")
    out = parse_benchmark_output(text)
    assert (out.avg_us, out.init_us, out.min_us) == (3512390.0, 2310440.0, 3400000.0)


def test_op_profiling_statistics_are_not_taken_for_the_run():
    op_profile = ("Operator-wise Profiling Info for Regular Benchmark Runs:\n"
                  "Timings (microseconds): count=50 first=20000 curr=20000 min=19000 max=21000 avg=20100 std=100\n"
                  "Memory (bytes): count=0\n")
    without_timings_line = "".join(line + "\n" for line in CLASSIC_TAIL.splitlines()
                                   if not line.startswith("Inference timings"))
    for text in (CLASSIC_TAIL + op_profile, without_timings_line + op_profile):
        out = parse_benchmark_output(text)
        assert (out.avg_us, out.count, out.min_us, out.std_us) == (23402.8, 50, 22987.0, 311.0)


def test_several_delegations_pick_the_requested_one():
    text = ("Replacing 13 out of 13 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions.\n"
            "Replacing 9 out of 13 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 3 partitions "
            "for the whole graph.\n" + CLASSIC_TAIL)
    out = parse_benchmark_output(text)
    assert out.delegation_for("gpu") == Delegation("TfLiteGpuDelegateV2", 9, 13, 3)
    assert out.delegation_for("xnnpack") == Delegation("TfLiteXNNPackDelegate", 13, 13, 1)
    assert out.delegation_for("nnapi").delegate == "TfLiteXNNPackDelegate"  # none matches: the first


def test_crlf_and_info_prefixed_litert2_block():
    block = fixture("litert2_cpu.txt").replace("Inference (min): 22.74 ms", "Inference (min): 22740 us")
    text = "".join("INFO: " + line + "\r\n" for line in block.splitlines())
    out = parse_benchmark_output(text)
    assert (out.format, out.avg_us, out.min_us, out.peak_memory_mb) == ("litert2", 23180.0, 22740.0, 14.02)


def test_litert2_percentiles():
    text = ("========== BENCHMARK RESULTS ==========\nInference (avg): 1.5 ms (10 runs)\n"
            "Inference (p5): 1.25 ms\nInference (median): 1.5 ms\nInference (p95): 2 ms\n====\n")
    out = parse_benchmark_output(text)
    assert (out.avg_us, out.p5_us, out.median_us, out.p95_us, out.count) == (1500.0, 1250.0, 1500.0, 2000.0, 10)


@pytest.mark.parametrize("text, message", [
    ("", "benchmark_model printed nothing"),
    ("STARTING!\nsomething else\n", "no inference timing in benchmark_model output (last line: 'something else')"),
    ("count=0\n", "no inference timing"),
])
def test_no_timing_is_unparsable(text, message):
    with pytest.raises(UnparsableOutput, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_benchmark_output(text)
