"""The `ecbdeploy` command line: a thin layer over ecbdeploy.api and friends.

Errors a user can fix (EcbDeployError) print as one line and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from . import api
from .arch import ACTIVATIONS
from .errors import EcbDeployError


def load_options(f):
    """Flags for what a checkpoint cannot say about itself."""
    options = [
        click.option("--with-idt/--no-idt", "with_idt", default=None,
                     help="The ECBs were trained with the identity branch (not stored in the weights). "
                          "Default: from the sidecar JSON if any, else off."),
        click.option("--pixel-range", type=click.Choice(["1", "255"]), default=None,
                     help="Value range the model works in. Default: 255 for official checkpoints, 1 for BasicSR."),
        click.option("--act", type=click.Choice(ACTIVATIONS), default=None,
                     help="Activation, when the weights hold no PReLU slopes (relu, rrelu, softplus and linear "
                          "store nothing). Default: prelu if slopes are present, else relu."),
        click.option("--ema/--no-ema", "prefer_ema", default=True,
                     help="BasicSR checkpoints: use 'params_ema' (default) or 'params'."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def load_flags(kw: dict) -> dict:
    pr = kw.pop("pixel_range", None)
    return {"with_idt": kw.pop("with_idt", None), "pixel_range": float(pr) if pr else None,
            "act": kw.pop("act", None), "prefer_ema": kw.pop("prefer_ema", True)}


def user_errors(f):
    """Turn EcbDeployError into a one-line click error (exit 1)."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except EcbDeployError as e:
            raise click.ClickException(str(e)) from None
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ecbdeploy")
def cli():
    """Take an ECBSR super-resolution checkpoint from training to a phone.

    Typical use: `ecbdeploy export CKPT` (fuse, ONNX, TFLite fp32/fp16/int8, parity report).
    """


@cli.command()
@click.argument("ckpt", type=click.Path(dir_okay=False))
@click.option("--input-size", metavar="HxW", help="Also report the MACs for this LR input size, e.g. 540x960.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@load_options
@user_errors
def inspect(ckpt, input_size, as_json, **kw):
    """Show the format, architecture, parameter counts and MACs of a checkpoint."""
    info = api.inspect(ckpt, input_size=api.parse_size(input_size), **load_flags(kw))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    a = info["arch"]
    click.echo(f"{info['path']}: {info['format']} checkpoint{' (fused)' if info['fused'] else ''}")
    click.echo(f"  architecture : {info['name']}  blocks={a['blocks']} channels={a['channels']} "
               f"colours={a['colors']} scale=x{a['scale']}")
    click.echo(f"  activation   : {a['act']}   identity branch: {'on' if a['with_idt'] else 'off'}   "
               f"pixel range: 0-{a['pixel_range']:g}")
    train = info["params"]["training"]
    click.echo(f"  parameters   : training {train if train is not None else '-'}  ->  fused {info['params']['fused']}")
    click.echo(f"  MACs         : {info['macs_per_lr_pixel']:,} per LR pixel")
    if "gmacs" in info:
        h, w = info["input_size"]
        click.echo(f"                 {info['gmacs']:.2f} GMACs for a {h}x{w} input")
    for note in info["notes"]:
        click.echo(f"  note: {note}")


@cli.command()
@click.argument("ckpt", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Fused checkpoint to write.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Max abs error allowed between fused and multi-branch outputs, as a fraction of the pixel range.")
@load_options
@user_errors
def fuse(ckpt, output, tolerance, **kw):
    """Fuse every ECB into one 3x3 conv, verify it, and write a deploy checkpoint.

    The output loads with torch.load(weights_only=True) and carries its architecture.
    """
    result = api.fuse_checkpoint(ckpt, output, tolerance=tolerance, **load_flags(kw))
    v = result["verification"]
    click.echo(f"wrote {result['output']}")
    click.echo(f"fused vs multi-branch max abs error: random input {v['max_abs_random']:.3g}, "
               f"photo '{v['photo']}' {v['max_abs_photo']:.3g} (tolerance {v['tolerance']:.3g})")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="NCHW float32 .npy in the model's pixel range.")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False), help="Where to write the NCHW output .npy.")
@click.option("--fused", is_flag=True, help="For a training checkpoint: fuse first and run the plain network.")
@click.option("--threads", type=int, default=None, help="CPU threads (LiteRT default 2).")
@load_options
@user_errors
def run(model, input_path, output_path, fused, threads, **kw):
    """Run MODEL (checkpoint, .onnx or .tflite) on an NCHW .npy array; write the output .npy."""
    from .fsutil import atomic_path
    from .runners import open_runner

    runner = open_runner(model, fused=fused, threads=threads, **load_flags(kw))
    y = runner(api.read_npy(input_path))
    import numpy as np

    with atomic_path(output_path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, y)
    click.echo(f"{runner.name}: {tuple(y.shape)} -> {output_path}")


from .commands_quality import evaluate_command, train_command, upscale_command  # noqa: E402

cli.add_command(train_command)
cli.add_command(evaluate_command)
cli.add_command(upscale_command)


from .android.command import bench_android_command  # noqa: E402

cli.add_command(bench_android_command)


from .commands_export import export_command, verify_command  # noqa: E402

cli.add_command(export_command)
cli.add_command(verify_command)


from .commands_bench import bench_command  # noqa: E402

cli.add_command(bench_command)


def main():
    try:
        cli.main(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
