"""Benchmarks on Android phones through adb and TFLite's `benchmark_model` (`ecbdeploy bench-android`).

benchmark_output: parse the tool's text; adb: devices, facts, push, shell; binary: find/check/fetch
the tool; bench: the run matrix; report: results on disk, --compare, tables; command: the CLI.
"""
