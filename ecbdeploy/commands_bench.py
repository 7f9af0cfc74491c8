"""CLI command `bench`: host latency, throughput and memory of checkpoints, ONNX and TFLite files
(thin: it builds the settings and calls ecbdeploy.bench / bench_fusion)."""

from __future__ import annotations

import click

from .api import parse_size
from .cli import load_flags, load_options, user_errors
from .commands_export import Progress
from .errors import EcbDeployError


@click.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="CPU threads for every runtime: LiteRT num_threads (XNNPACK), ONNX Runtime intra-op threads, "
                   "torch.set_num_threads.")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed runs per model. Runs are interleaved: each round runs every model once, starting at a "
                   "different model each round, so background load hits all models alike.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True,
              help="Untimed runs per model before timing.")
@click.option("--input-size", metavar="HxW", default=None,
              help="LR input size for checkpoints and dynamic-size ONNX. Static models dictate their own size and "
                   "must all agree (with each other and with this option). Default: the static size, else 540x960.")
@click.option("--json", "json_out", metavar="OUT", type=click.Path(dir_okay=False), default=None,
              help="Also write every figure (all run times too) and machine facts (CPU model, cores, load average, "
                   "threads, tool versions) to OUT as JSON.")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Measure peak memory: each model runs again (load + 2 runs) in a fresh child process; the figure "
                   "is its resident high-water mark minus its resident size after importing the runtime (Linux: "
                   "VmHWM, reset after the imports).")
@click.option("--compare-fusion", is_flag=True,
              help="MODELS is one training checkpoint: export its multi-branch network and its fused network to "
                   "each of --formats (temporary files) and time each pair in the same runtime; prints the speed-up "
                   "of fusion per runtime (PyTorch always included).")
@click.option("--formats", default=None, metavar="LIST",
              help="With --compare-fusion: comma list of exported forms to time besides PyTorch: onnx (ONNX Runtime), "
                   "tflite (fp32 via onnx2tf, LiteRT). Default: onnx,tflite.")
@load_options
@user_errors
def bench_command(models, threads, runs, warmup, input_size, json_out, memory, compare_fusion, formats, **kw):
    """Time MODELs (training or fused checkpoints, .onnx, .tflite) on this machine on one photograph crop.

    Reports median, p90 and min latency (ms), output megapixels/s, achieved GFLOP/s (2 x the fused
    network's MACs per LR pixel x H x W / median time, for every form) and peak memory (MB). A training
    checkpoint gives two rows: pytorch multibranch and pytorch fused.

    \b
    Input: the bicubic LR of a photograph (scikit-image's astronaut), mirror-extended or cropped to
    the size, in each model's colours and pixel range. A timed run is one runner call, NCHW float32
    in and out (LiteRT's NHWC conversion included). All models are opened in this process and their
    runs interleaved; memory is measured afterwards, one child process per model.
    """
    from . import bench_fusion
    from .bench import BenchSettings, format_table, run_bench, write_json

    settings = BenchSettings(threads=threads, runs=runs, warmup=warmup, input_hw=parse_size(input_size),
                             memory=memory, load_flags=load_flags(kw))
    progress = Progress()
    if formats is not None and not compare_fusion:
        raise click.UsageError("--formats applies to --compare-fusion only")
    if compare_fusion:
        if len(models) != 1:
            raise EcbDeployError("--compare-fusion takes exactly one training checkpoint")
        formats = bench_fusion.parse_formats(formats or ",".join(bench_fusion.COMPARE_FORMATS))
        result = bench_fusion.compare_fusion(models[0], settings, formats, progress)
    else:
        result = run_bench(list(models), settings, progress)
    click.echo(format_table(result))
    if json_out:
        write_json(result, json_out)
        click.echo(f"wrote {json_out}")
