"""`ecbdeploy verify OUTDIR`: re-check every artifact of an export (hash and parity) for CI."""

from __future__ import annotations

from pathlib import Path

from . import parity
from .arch import ArchSpec
from .errors import EcbDeployError
from .export import load_report
from .fsutil import sha256_file
from .report import REFERENCE_FILE, load_reference
from .runners import open_runner


def verify(outdir, threads: int = 2) -> dict:
    outdir = Path(outdir)
    rep = load_report(outdir)
    if not (outdir / REFERENCE_FILE).is_file():
        raise EcbDeployError(f"{outdir / REFERENCE_FILE} is missing: cannot re-check parity")
    arch = ArchSpec.from_dict(rep["arch"])
    images, references = load_reference(outdir)
    checks = []
    for art in rep["artifacts"]:
        path = outdir / art["file"]
        check = {"file": art["file"], "problems": []}
        if not path.is_file():
            check["problems"].append("file missing")
        else:
            if art.get("sha256") and sha256_file(path) != art["sha256"]:
                check["problems"].append("sha256 differs from the report (file changed since export)")
            try:
                runner = open_runner(path, threads=threads)
                figures = parity.compare(parity.run_all(runner, images), references, images, arch)
            except EcbDeployError as e:
                check["problems"].append(f"cannot run: {e}")
            else:
                metric, limit = art["tolerance"]["metric"], art["tolerance"]["limit"]
                value = figures["max_abs_error_relative"] if metric == "max_abs_rel" else figures["min_psnr_vs_reference"]
                check["parity"] = {"metric": metric, "limit": limit, "value": value}
                bad = value > limit if metric == "max_abs_rel" else value < limit
                if bad:
                    check["problems"].append(f"parity {metric} {value:.4g} outside limit {limit:g}")
        check["passed"] = not check["problems"]
        checks.append(check)
    if not checks:
        raise EcbDeployError(f"report in {outdir} lists no artifacts")
    return {"outdir": str(outdir), "checks": checks, "passed": all(c["passed"] for c in checks)}
