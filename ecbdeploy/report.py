"""The export report: report.json (stable schema, see README), report.md and comparison.png."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
from pathlib import Path

import numpy as np

from .fsutil import atomic_path, sha256_file, write_text_atomic
from .parity import ParityImage, valid_output

SCHEMA_VERSION = 1
REFERENCE_FILE = "parity_reference.npz"


def tool_versions() -> dict:
    out = {}
    for pkg in ("ecbdeploy", "torch", "onnx", "onnxruntime", "onnxsim", "onnx2tf", "tensorflow", "ai-edge-litert", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def new_report(name, ckpt, loaded, hw, config) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tools": tool_versions(),
        "source": {"path": str(ckpt), "sha256": sha256_file(ckpt), "format": loaded.format, "notes": loaded.notes},
        "arch": loaded.arch.to_dict(),
        "input_size": list(hw) if hw else None,
        "clamp": config.clamp,
        "io_dtype": config.io_dtype,
        "tolerances": {k: {"metric": m, "limit": v} for k, (m, v) in config.tolerances.items()},
        "stages": [],
        "artifacts": [],
    }


def _onnx_io(shape, name, pixel_range):
    return {"name": name, "shape": shape, "dtype": "float32", "layout": "NCHW", "quantization": None,
            "pixel_range": pixel_range}


def onnx_entry(art, outdir, figures, tol, ok, arch) -> dict:
    from .onnx_export import ALLOWED_OPS, FORBIDDEN_OPS

    problems = sorted(set(art.ops) & FORBIDDEN_OPS) + sorted(set(art.ops) - ALLOWED_OPS)
    return {
        "file": art.path.name, "format": "onnx", "target": "onnx", "precision": "float32",
        "description": "simplified ONNX, DepthToSpace DCR" if art.simplified else "checked ONNX (onnxsim failed)",
        "sha256": sha256_file(art.path) if outdir else None, "size_bytes": art.path.stat().st_size,
        "activation_form": art.activation_form,
        "input": _onnx_io(art.input_shape, "lr", arch.pixel_range),
        "output": _onnx_io(art.output_shape, "sr", arch.pixel_range),
        "pixel_io": None, "ops": art.ops,
        "graph_check": {"passed": not problems, "problems": [f"ops outside the deploy set {problems}"] if problems else []},
        "gpu": None, "parity": figures, "tolerance": tol, "passed": ok,
    }


def save_reference(outdir, images: list[ParityImage], references, arch) -> None:
    """The parity inputs and reference outputs, so `ecbdeploy verify` can re-check without the checkpoint."""
    arrays = {}
    for img, ref in zip(images, references):
        arrays[f"{img.name}__lr"] = img.lr
        arrays[f"{img.name}__hr"] = img.hr
        arrays[f"{img.name}__ref"] = valid_output(ref, img, arch.scale)
        arrays[f"{img.name}__valid"] = np.array(img.valid)
    with atomic_path(Path(outdir) / REFERENCE_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def load_reference(outdir) -> tuple[list[ParityImage], list[np.ndarray]]:
    data = np.load(Path(outdir) / REFERENCE_FILE)
    names = sorted({k.split("__")[0] for k in data.files}, key=lambda n: list(data.files).index(f"{n}__lr"))
    images, refs = [], []
    for n in names:
        valid = tuple(int(v) for v in data[f"{n}__valid"])
        images.append(ParityImage(n, data[f"{n}__lr"], data[f"{n}__hr"], valid))
        ref = data[f"{n}__ref"]
        refs.append(ref[None])  # valid region only: valid_output() of it is itself
    return images, refs


def _fmt(v, spec=".3g"):
    if v is None:
        return "-"
    if isinstance(v, float) and not np.isfinite(v):
        return "inf"
    return format(v, spec)


def markdown(rep: dict) -> str:
    a = rep["arch"]
    lines = [
        f"# ecbdeploy export: {rep['name']}",
        "",
        f"Status: **{rep['status'].upper()}**" + (f" ({'; '.join(rep['failures'])})" if rep["failures"] else ""),
        "",
        f"- Source: `{rep['source']['path']}` ({rep['source']['format']} format), "
        f"ECBSR M{a['blocks']}C{a['channels']} x{a['scale']}, {a['colors']} colour(s), {a['act']}, "
        f"pixel range 0-{a['pixel_range']:g}",
        f"- Input size: {'dynamic' if rep['input_size'] is None else 'x'.join(map(str, rep['input_size']))}; "
        f"output clamped: {rep['clamp']}; integer I/O: {rep['io_dtype']}",
        f"- Parity photos (held out, scikit-image): {', '.join(rep['reference']['images'])}; reference: "
        f"{rep['reference']['runner']}" + (f"; LR: {rep['reference']['lr']}" if rep["reference"].get("lr") else ""),
        f"- Bicubic Y-PSNR: {rep['bicubic']['mean_y_psnr_vs_hr']:.2f} dB",
    ]
    if "fusion" in rep and "max_abs_random" in rep["fusion"]:
        f = rep["fusion"]
        lines.append(f"- Fusion check: max abs error {f['max_abs_random']:.3g} (random), {f['max_abs_photo']:.3g} (photo); "
                     f"tolerance {f['tolerance']:.3g}")
    if "speed" in rep:
        s = rep["speed"]
        lines.append(f"- Host speed (LiteRT XNNPACK, {s['threads']} threads, {s['input_size'][0]}x{s['input_size'][1]}): "
                     f"fp32 {s['min_ms']['fp32']:.1f} ms, int8 {s['min_ms']['int8']:.1f} ms best of {s['runs']} "
                     f"(medians {s['median_ms']['fp32']:.1f} / {s['median_ms']['int8']:.1f} ms); "
                     f"int8 speed-up {s['int8_speedup_vs_fp32']:.2f}x, activation form '{s['int8_activation_form']}'")
    ranges = rep.get("int8_preparation", {}).get("activation_ranges")
    if ranges:
        lines.append(f"- int8 activation ranges: {ranges['source']}" + (
            f", {len(ranges['tensors'])} tensors (residual {ranges['tensors'][-1]['range']} instead of "
            f"{ranges['tensors'][-1]['converter_range']})" if ranges.get("tensors") else ""))
    if "wall_time_s" in rep:
        lines.append(f"- Export wall time: {rep['wall_time_s']:.0f} s")
    lines += ["", "## Stages", "", "| stage | max abs error | PSNR vs reference | Y-PSNR vs HR | Δ vs bicubic | tolerance | result |",
              "|---|---|---|---|---|---|---|"]
    bic = rep["bicubic"]["mean_y_psnr_vs_hr"]
    for s in rep["stages"]:
        p, t = s["parity"], s["tolerance"]
        sign = "≤" if t["metric"] == "max_abs_rel" else "≥"
        lines.append(f"| {s['stage']} | {_fmt(p['max_abs_error'])} | {_fmt(p['min_psnr_vs_reference'], '.1f')} dB | "
                     f"{p['mean_y_psnr_vs_hr']:.2f} dB | {p['mean_y_psnr_vs_hr'] - bic:+.2f} dB | "
                     f"{t['metric']} {sign} {t['limit']:g} | {'pass' if s['passed'] else '**FAIL**'} |")
    lines += ["", "## Artifacts", ""]
    for art in rep["artifacts"]:
        io = art["input"]
        q = io.get("quantization")
        lines += [
            f"### {art['file']}",
            "",
            "| | |",
            "|---|---|",
            f"| precision | {art['precision']} ({art['description']}) |",
            f"| size | {art['size_bytes'] / 1024:.1f} KiB |",
            f"| sha256 | `{art['sha256'][:16] if art['sha256'] else '-'}…` |",
            f"| input | `{io['name']}` {io['shape']} {io['dtype']} {io['layout']}"
            + (f", scale {q['scale']:.6g} zero point {q['zero_point']}" if q else "") + " |",
            f"| ops | {', '.join(f'{k}×{v}' for k, v in sorted(art['ops'].items()))} |",
            f"| activation form | {art['activation_form']} |",
            f"| graph check | {'pass' if art['graph_check']['passed'] else 'FAIL: ' + '; '.join(art['graph_check']['problems'])} |",
            f"| GPU delegate (analyzer) | {'-' if art['gpu'] is None else ('compatible' if art['gpu']['compatible'] else 'NOT compatible')} |",
            f"| parity | max abs {_fmt(art['parity']['max_abs_error'])}, PSNR vs reference "
            f"{_fmt(art['parity']['min_psnr_vs_reference'], '.1f')} dB |",
            f"| quality | Y-PSNR {art['parity']['mean_y_psnr_vs_hr']:.2f} dB (bicubic {bic:.2f} dB) |",
            "",
        ]
    lines.append("![comparison](comparison.png)")
    return "\n".join(lines) + "\n"


def comparison_png(path, rep, images, outputs: dict, arch) -> None:
    """A real-photo crop: bicubic | each precision, plus a heat map of |int8 - fp32|."""
    from PIL import Image, ImageDraw

    from .images import upscale_bicubic_chw

    img = images[0]
    s = arch.scale
    lr = img.lr[0, :, : img.valid[0], : img.valid[1]]
    panels = {"bicubic": upscale_bicubic_chw(lr, s)}
    for key, y in outputs.items():
        panels[key] = valid_output(y, img, s)
    crop = 128
    h, w = panels["bicubic"].shape[1:]
    top, left = max(0, h // 2 - crop), max(0, w // 2 - crop)

    def to_rgb(chw):
        x = np.clip(chw[:, top: top + 2 * crop, left: left + 2 * crop] / arch.pixel_range, 0, 1)
        x = np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x
        return (np.transpose(x, (1, 2, 0)) * 255).round().astype(np.uint8)

    tiles = [(k, to_rgb(v)) for k, v in panels.items()]
    if "fp32" in outputs and "int8" in outputs:
        diff = np.abs(panels["int8"] - panels["fp32"]).max(axis=0)[top: top + 2 * crop, left: left + 2 * crop]
        heat = np.clip(diff / arch.pixel_range * 255 * 32, 0, 255)  # 8 grey levels or more = full red
        rgb = np.stack([heat, np.zeros_like(heat), 255 - heat], -1).astype(np.uint8)
        tiles.append(("|int8-fp32|, red >= 8 levels", rgb))
    th, tw = tiles[0][1].shape[:2]
    canvas = Image.new("RGB", (tw * len(tiles), th + 18), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, tile) in enumerate(tiles):
        canvas.paste(Image.fromarray(tile), (i * tw, 18))
        draw.text((i * tw + 4, 3), label, fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def write_all(outdir, rep, images, outputs: dict) -> None:
    """report.json, report.md and comparison.png (outputs: each TFLite file's output on images[0])."""
    outdir = Path(outdir)
    write_text_atomic(outdir / "report.json", json.dumps(rep, indent=2, default=float) + "\n")
    write_text_atomic(outdir / "report.md", markdown(rep))
    comparison_png(outdir / "comparison.png", rep, images, outputs, _arch(rep))


def _arch(rep):
    from .arch import ArchSpec

    return ArchSpec.from_dict(rep["arch"])
