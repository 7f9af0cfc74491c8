"""CLI commands for making and judging models: `train`, `evaluate`, `upscale`.

The work lives in ecbdeploy.train / evaluate / upscale; these commands parse options, report
progress and print results.
"""

from __future__ import annotations

import sys

import click

from .arch import ACTIVATIONS
from .cli import load_flags, load_options, user_errors


def _format_duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _print_train_event(event) -> None:
    if event.kind == "step":
        click.echo(f"iter {event.iteration}/{event.total}  loss {event.loss:.4g}  lr {event.lr:.2e}  "
                   f"{_format_duration(event.elapsed)} elapsed")
    else:
        gain = event.val_psnr - event.bicubic_psnr
        click.echo(f"iter {event.iteration}/{event.total}  held-out Y-PSNR {event.val_psnr:.2f} dB  "
                   f"(bicubic {event.bicubic_psnr:.2f}, {gain:+.2f} dB)")


@click.command("train")
@click.option("--data", required=True, metavar="DIR|builtin",
              help="Folder of training images, or 'builtin' for the scikit-image training photographs "
                   "(the held-out evaluation photographs are never used).")
@click.option("--scale", type=click.Choice(["2", "3", "4"]), required=True, help="Upscaling factor.")
@click.option("--blocks", type=int, required=True, help="ECBs between the head and tail ECB (M in ECBSR-MxCy).")
@click.option("--channels", type=int, required=True, help="Feature channels (C in ECBSR-MxCy).")
@click.option("--colors", type=click.Choice(["1", "3"]), default="1", show_default=True,
              help="1: train on the Y channel (BT.601); 3: train on RGB.")
@click.option("--act", type=click.Choice(ACTIVATIONS), default="prelu", show_default=True,
              help="Activation after every ECB but the last.")
@click.option("--with-idt", is_flag=True, help="Add the identity branch to ECBs with equal in/out channels.")
@click.option("--pixel-range", type=click.Choice(["1", "255"]), default="255", show_default=True,
              help="Value range the network works in (official ECBSR: 255; BasicSR: 1).")
@click.option("--format", "save_format", type=click.Choice(["official", "basicsr"]), default="official",
              show_default=True,
              help="Checkpoint layout: a bare state_dict (official) or {'params', 'params_ema'} (BasicSR).")
@click.option("--iters", type=int, default=20000, show_default=True,
              help="Total training iterations (with --resume: the total to reach, counting earlier runs).")
@click.option("--patch", type=int, default=48, show_default=True,
              help="LR patch side in pixels; the HR patch is patch x scale.")
@click.option("--batch", type=int, default=16, show_default=True, help="Patches per iteration.")
@click.option("--lr", type=float, default=5e-4, show_default=True,
              help="Adam learning rate, decayed by a cosine to 1% of it at the last iteration.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for initial weights and patch sampling.")
@click.option("--val-every", type=int, default=1000, show_default=True,
              help="Report the Y-PSNR on the held-out photographs and save the checkpoint every N "
                   "iterations (and at the end); 0: no validation.")
@click.option("--log-every", type=int, default=100, show_default=True, help="Print the mean loss every N iterations.")
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads for PyTorch.")
@click.option("--resume", is_flag=True,
              help="Continue from -o CKPT and its CKPT.state.pt (optimizer state, iteration count).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint to write (.pth); CKPT.json and CKPT.state.pt are written next to it.")
@user_errors
def train_command(data, scale, blocks, channels, colors, act, with_idt, pixel_range, save_format, iters, patch,
                  batch, lr, seed, val_every, log_every, threads, resume, output):
    """Train an ECBSR network on CPU (L1 loss, Adam, flips/transposes, bicubic LR).

    Writes the checkpoint atomically, plus a JSON sidecar with the architecture and training
    record. Example: ecbdeploy train --data builtin --scale 2 --blocks 4 --channels 16 -o m.pth
    """
    from .datasets import load_image_set
    from .train import TrainConfig, default_validator, train

    config = TrainConfig(scale=int(scale), blocks=blocks, channels=channels, colors=int(colors), act=act,
                         with_idt=with_idt, pixel_range=float(pixel_range), iters=iters, patch=patch, batch=batch,
                         lr=lr, seed=seed, val_every=val_every, log_every=log_every, threads=threads,
                         save_format=save_format)
    images = load_image_set(data, allow_held_out=False)
    click.echo(f"training {config.arch().name} on {len(images)} image(s) from {data}, "
               f"{iters} iterations of {batch} x {patch}x{patch} LR patches")
    validator = default_validator(config) if val_every else None
    result = train(config, images, output, resume=resume, validator=validator, data_label=str(data),
                   on_event=_print_train_event)
    click.echo(f"wrote {result.checkpoint} and {result.sidecar.name} "
               f"({result.iterations} iterations, {_format_duration(result.wall_time)})")


def _parse_tile(text: str | None) -> tuple[int, int] | None:
    from .api import parse_size

    return parse_size(text)


@click.command("evaluate")
@click.argument("models", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--data", default="builtin-heldout", show_default=True, metavar="DIR|builtin-heldout",
              help="Folder of HR images, or 'builtin-heldout' for the scikit-image photographs never used "
                   "for training (astronaut, coffee, chelsea).")
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default=None,
              help="Upscaling factor; read from the models when omitted (required with no model).")
@click.option("--fused", is_flag=True, help="Also evaluate each training checkpoint fused into plain 3x3 convs.")
@click.option("--tile", metavar="HxW", default=None,
              help="Largest LR tile for models without a fixed input size (default 512x512); tiles overlap "
                   "by the receptive field, so figures equal a whole-image run. Fixed-size models use their size.")
@click.option("--threads", type=int, default=None, help="CPU threads for the runtimes (LiteRT default 2).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write every figure (per image and mean) to this JSON file.")
@click.option("--lr", "lr_precision", type=click.Choice(["8bit", "float"]), default="8bit", show_default=True,
              help="8bit: the LR input is rounded to 8-bit values, like LR benchmark images, camera frames and "
                   "anything a uint8-input model can take (every row gets the same bytes). float: the unrounded "
                   "bicubic output, which float models can use and uint8 models cannot.")
@load_options
@user_errors
def evaluate_command(models, data, scale, fused, tile, threads, json_path, lr_precision, **kw):
    """Y-PSNR/SSIM of MODEL... (checkpoints, .onnx, .tflite) and bicubic on HR images.

    The protocol of SR papers: HR cropped to a multiple of the scale, bicubic LR (8-bit values unless
    --lr float), BT.601 Y on the 0-255 scale, `scale` border pixels shaved, SSIM with data range 255.
    A bicubic row is always shown.
    """
    import json

    from .datasets import load_image_set
    from .evaluate import evaluate, format_table, open_models
    from .fsutil import write_text_atomic

    runners = open_models(models, fused=fused, threads=threads, **load_flags(kw))
    images = load_image_set(data)
    result = evaluate(runners, images, int(scale) if scale else None, tile=_parse_tile(tile),
                      on_image=lambda name: click.echo(f"evaluating on {name} ...", err=True),
                      float_lr=lr_precision == "float")
    click.echo(format_table(result))
    if json_path:
        write_text_atomic(json_path, json.dumps({"data": str(data), **result.to_dict()}, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


@click.command("upscale")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Folder for the results, written as <name>_x<scale>.png.")
@click.option("--tile", metavar="HxW", default=None,
              help="Largest LR tile for models without a fixed input size (default 512x512), to bound memory; "
                   "tiles overlap by the receptive field, so there are no seams. Fixed-size models use their size.")
@click.option("--fused", is_flag=True, help="For a training checkpoint: fuse first and run the plain network.")
@click.option("--threads", type=int, default=None, help="CPU threads for the runtime (LiteRT default 2).")
@load_options
@user_errors
def upscale_command(model, images, outdir, tile, fused, threads, **kw):
    """Upscale IMAGE... (files or folders) with MODEL (checkpoint, .onnx or .tflite) into PNGs.

    1-colour models run on the Y channel, merged with bicubic-upscaled colour; RGB models run on RGB.
    """
    from .runners import open_runner
    from .upscale import expand_inputs, upscale_files

    runner = open_runner(model, fused=fused, threads=threads, **load_flags(kw))
    files = expand_inputs(images)
    if len(files) == 1:
        written = upscale_files(runner, files, outdir, tile=_parse_tile(tile))
    else:
        with click.progressbar(length=len(files), label="upscaling", file=sys.stderr) as bar:
            written = upscale_files(runner, files, outdir, tile=_parse_tile(tile), on_image=lambda _: bar.update(1))
    for path in written:
        click.echo(f"wrote {path}")
