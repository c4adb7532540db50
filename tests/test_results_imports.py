"""Reading results needs no torch: `bench table` starts fast and works where torch is absent."""

import subprocess
import sys

import pandas as pd
from conftest import bench


def test_the_table_path_imports_no_torch(workdir):
    job = workdir / "job"
    job.mkdir()
    pd.DataFrame([{"dataset": "d", "image_id": "a", "defense": "none", "transform": "jpeg",
                   "generator": "none", "seed": 0, "pair": "fidelity", "metric": "ssim",
                   "value": 0.9, "n": 1}]).to_csv(job / "samples.csv", index=False)
    (job / "stats.json").write_text('{"directions": {"ssim": true}}')
    (job / "status.json").write_text('{"status": "done"}')
    code = ("import sys\n"
            "from benchmark.cli import main\n"
            f"main(['table', {str(job)!r}, '--metric', 'ssim', '--pair', 'fidelity',"
            f" '--vs', {str(workdir / 'paper.csv')!r}])\n")
    (workdir / "paper.csv").write_text(
        "table,setting,dataset,defense,transform,generator,pair,metric,value,paper_name,source\n"
        "t,s,d,none,jpeg,,fidelity,ssim,0.8,None,test\n")
    probe = code + "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=workdir, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "0.9000" in proc.stdout and "0.8000" in proc.stdout
    plain = bench("table", str(job), "--metric", "ssim", "--pair", "fidelity", cwd=workdir)
    assert "ssim ↑" in plain.stdout  # the direction came from stats.json
