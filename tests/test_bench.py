"""bench/gpu.py's dry run on the CPU: every section runs and reports its figures against its baseline."""

import json
import subprocess
import sys

import pytest


def _dry_run(repo, tmp_path, *options: str) -> dict:
    out = tmp_path / "gpu.json"
    subprocess.run([sys.executable, str(repo / "bench" / "gpu.py"), "--dry-run", "--out", str(out),
                    "--photos", str(repo / "data" / "coco_sample" / "train2017"), *options],
                   cwd=tmp_path, check=True, timeout=900)
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["machine"]["device"].startswith("cpu")
    for name, section in report["sections"].items():
        assert "error" not in section, (name, section)
        baseline, *others = section["rows"] if name != "inference" or "--no-compile" in options \
            else section["rows"][1:]
        assert baseline["vs_baseline"] == 1 and others, name
    if "gatys" in report["sections"]:
        gatys = report["sections"]["gatys"]["rows"]
        assert gatys[1]["loss_vs_baseline"] == pytest.approx(1, rel=1e-3), "fp32 DeviceLBFGS = torch's L-BFGS"
    return report


def test_the_gpu_bench_dry_run_reports_every_section(repo, tmp_path):
    report = _dry_run(repo, tmp_path, "--no-compile")
    assert set(report["sections"]) == {"inference", "gatys", "training", "data"}


@pytest.mark.slow  # 14 minutes on 2 loaded cores: Inductor compiles the training step's forward and backward
def test_the_gpu_bench_dry_run_compiles_too(repo, tmp_path):
    report = _dry_run(repo, tmp_path, "--sections", "inference", "training")
    assert any("compile" in row["name"] for row in report["sections"]["training"]["rows"])
