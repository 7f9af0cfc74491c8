"""CLI commands `export` and `verify` (thin: they build a config and call ecbdeploy.export/verify)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .api import parse_size
from .errors import EcbDeployError

TOLERANCE_HELP = ("Stage tolerance STAGE=VALUE, repeatable. Stages and defaults: fusion=1e-4, onnx=1e-4, fp32=1e-3, "
                  "fp16=5e-3 (max abs error vs the multi-branch model, as a fraction of the pixel range); "
                  "dynamic=40, int8=38, int16x8=45 (minimum PSNR in dB between the artifact's and the reference output).")


def _tolerances(items):
    from .export import DEFAULT_TOLERANCES

    tol = dict(DEFAULT_TOLERANCES)
    for item in items:
        stage, _, value = item.partition("=")
        if stage not in tol or not value:
            raise click.BadParameter(f"{item!r}: expected STAGE=VALUE with STAGE one of {', '.join(tol)}", param_hint="--tolerance")
        try:
            tol[stage] = (tol[stage][0], float(value))
        except ValueError:
            raise click.BadParameter(f"{item!r}: {value!r} is not a number", param_hint="--tolerance") from None
    return tol


class Progress:
    """Numbered stage lines with elapsed time, on stderr."""

    def __init__(self):
        self.start, self.step = time.time(), 0

    def __call__(self, message: str):
        if message.startswith("warning:"):
            click.echo(f"  {message}", err=True)
            return
        self.step += 1
        click.echo(f"[{self.step:2d}] {time.time() - self.start:6.1f}s  {message}", err=True)


def _cli_helpers():
    from .cli import load_flags, load_options, user_errors

    return load_flags, load_options, user_errors


load_flags, load_options, user_errors = _cli_helpers()


@click.command("export")
@click.argument("ckpt", type=click.Path(dir_okay=False))
@click.option("-o", "--outdir", type=click.Path(file_okay=False), default=None,
              help="Output folder. Default: ./<checkpoint name>_export")
@click.option("--formats", default="onnx,fp32,fp16,int8", show_default=True,
              help="Comma list of: onnx, fp32, fp16, dynamic (int8 weights, float activations), int8 (full integer), "
                   "int16x8 (int16 activations).")
@click.option("--input-size", metavar="HxW", default=None,
              help="Static LR input size. Default: the size that gives a 1080x1920 output (540x960 at x2).")
@click.option("--dynamic", is_flag=True, help="ONNX with dynamic height and width (ONNX only; TFLite needs a static size).")
@click.option("--opset", type=click.IntRange(min=13), default=17, show_default=True, help="ONNX opset.")
@click.option("--name", default=None, help="Base name of the files. Default: the checkpoint's file name.")
@click.option("--no-clamp", is_flag=True, help="Do not clamp the output to the pixel range.")
@click.option("--io", "io_dtype", type=click.Choice(["uint8", "int8", "float32"]), default="uint8", show_default=True,
              help="int8 model input/output type. uint8/int8 are in pixel units (scale = range/255 exactly).")
@click.option("--calib", "calib_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of calibration images (PNG/JPEG/BMP/TIFF; any of grey, RGB, RGBA, 16-bit), each at least "
                   "input size x scale. Default: scikit-image's bundled photographs (held-out ones excluded).")
@click.option("--calib-count", type=click.IntRange(min=1), default=16, show_default=True, help="Number of calibration samples.")
@click.option("--int8-form", type=click.Choice(["auto", "native", "addrelu"]), default="auto", show_default=True,
              help="How PReLU is written in the int8 graph: native PRELU (not run by XNNPACK in int8), or "
                   "x + relu((a-1)*x) (MUL+ReLU and ADD, both run in int8; exact, slopes above 1 are folded "
                   "into the convs first). auto: addrelu for PReLU models.")
@click.option("--int8-ranges", type=click.Choice(["minmax", "percentile", "converter"]), default="minmax",
              show_default=True,
              help="Ranges of the int8 activation tensors. minmax: ecbdeploy runs the converted float network on "
                   "the calibration samples and writes each tensor's own min/max into the .tflite (ReLU outputs "
                   "start at 0; the residual gets its own range, not its sum's). percentile: the same with the "
                   "0.01-99.99 percentiles (higher PSNR, but rare clipped pixels: larger worst-pixel error). "
                   "converter: keep onnx2tf's calibration ranges.")
@click.option("--tolerance", "tolerance_items", multiple=True, metavar="STAGE=VALUE", help=TOLERANCE_HELP)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="CPU threads for LiteRT/ONNX Runtime checks.")
@click.option("-v", "--verbose", is_flag=True, help="Show onnx2tf/TensorFlow logs (always saved in OUTDIR/logs/).")
@load_options
@user_errors
def export_command(ckpt, outdir, formats, input_size, dynamic, opset, name, no_clamp, io_dtype, calib_dir, calib_count,
                   int8_form, int8_ranges, tolerance_items, threads, verbose, **kw):
    """Fuse, export ONNX and TFLite (fp32/fp16/int8), check parity at every stage, write a report.

    Writes OUTDIR/<name>.onnx, <name>_<precision>.tflite, report.json, report.md, comparison.png,
    and onnx2tf logs in OUTDIR/logs/. Exits 1 naming the stage whose tolerance was exceeded.
    """
    from .export import ExportConfig, export

    config = ExportConfig(
        outdir=Path(outdir or f"{Path(ckpt).stem}_export"),
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
        input_hw=parse_size(input_size), dynamic=dynamic, opset=opset, clamp=not no_clamp, io_dtype=io_dtype,
        name=name, calib_dir=Path(calib_dir) if calib_dir else None, calib_count=calib_count,
        tolerances=_tolerances(tolerance_items), threads=threads, int8_form=int8_form, int8_ranges=int8_ranges, verbose=verbose,
        load_flags=load_flags(kw),
    )
    rep = export(ckpt, config, progress=Progress())
    click.echo(f"\n{config.outdir}/ ({rep['wall_time_s']:.0f} s)")
    for art in rep["artifacts"]:
        p = art["parity"]
        click.echo(f"  {art['file']:40s} {art['size_bytes'] / 1024:7.1f} KiB  max abs err {p['max_abs_error']:.3g}  "
                   f"Y-PSNR {p['mean_y_psnr_vs_hr']:.2f} dB  {'ok' if art['passed'] and art['graph_check']['passed'] else 'FAILED'}")
    click.echo(f"  bicubic Y-PSNR {rep['bicubic']['mean_y_psnr_vs_hr']:.2f} dB")
    if "speed" in rep:
        s = rep["speed"]
        click.echo(f"  host LiteRT {s['threads']} threads, best of {s['runs']}: fp32 {s['min_ms']['fp32']:.1f} ms, "
                   f"int8 {s['min_ms']['int8']:.1f} ms (int8 {s['int8_speedup_vs_fp32']:.2f}x faster)")
    click.echo(f"  report: {config.outdir / 'report.md'}")
    if rep["failures"]:
        raise EcbDeployError("export failed: " + "; ".join(rep["failures"]))


@click.command("verify")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads for the runtimes.")
@user_errors
def verify_command(outdir, threads):
    """Re-check every artifact of an export folder (sha256 and parity); exit 1 on any failure."""
    from .verify import verify

    result = verify(outdir, threads)
    for c in result["checks"]:
        p = c.get("parity")
        fig = f"{p['metric']} {p['value']:.4g} (limit {p['limit']:g})" if p else ""
        click.echo(f"{'ok  ' if c['passed'] else 'FAIL'}  {c['file']:40s} {fig}  {'; '.join(c['problems'])}")
    if not result["passed"]:
        raise EcbDeployError(f"verify failed for {sum(not c['passed'] for c in result['checks'])} artifact(s)")
    click.echo(f"all {len(result['checks'])} artifacts verified", err=sys.stderr.isatty())
