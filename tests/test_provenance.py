"""Every number says where it came from: stats.json, cache sidecars and sweep_summary.csv
record bench's version and commit, the libraries, the device and the weights; `bench table`
footnotes them and warns when one table mixes bench versions, weights or libjpeg builds."""

import hashlib
import io
import json
import platform
import subprocess

import pandas as pd
import PIL
import pytest
import torch
from conftest import TINY, bench

import benchmark
from benchmark import provenance
from benchmark.models import hub
from benchmark.provenance import FLAT_COLUMNS, checkout, weights
from benchmark.results.job_files import sweep_summary

JOB = [*TINY, "defense=none", "transform=jpeg"]


def sidecars(cache, stage: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in (cache / stage).rglob("*.json")
            if not p.name.endswith(".record.json")]


def test_a_job_and_its_cache_entries_record_what_made_them(workdir):
    bench("run", *JOB, "metric=[psnr]", "hydra.run.dir=a", cwd=workdir)
    stats = json.loads((workdir / "a" / "stats.json").read_text())
    record = stats["provenance"]
    assert record["bench"]["version"] == benchmark.__version__
    assert len(record["bench"]["commit"]) == 40 and record["bench"]["dirty"] in (True, False)
    assert record["python"] == platform.python_version()
    packages = record["packages"]
    assert torch.__version__.startswith(packages["torch"])
    assert packages["Pillow"] == PIL.__version__
    assert {"diffusers", "transformers", "numpy", "kornia"} <= set(packages)
    assert record["codecs"]["libjpeg"]  # Pillow's JPEG encoder, which the jpeg transform runs
    assert record["device"]["type"] == "cpu" and record["device"]["name"]
    assert record["components"]["transform"].startswith("1+code.")
    assert record["weights"] == {} and stats["cached_provenance"] == []
    made = sidecars(workdir / "cache", "transform")
    assert len(made) == 3
    for sidecar in made:
        assert sidecar["version"] == record["components"]["transform"]
        assert sidecar["provenance"] == {k: v for k, v in record.items() if k != "components"}
    assert sidecars(workdir / "cache", "job")[0]["provenance"] == record


def test_cached_entries_made_elsewhere_are_named_and_a_mixed_table_warns(workdir):
    bench("run", *JOB, "metric=[psnr]", "hydra.run.dir=a", cwd=workdir)
    for path in (workdir / "cache" / "transform").rglob("*.json"):  # made by another libjpeg
        sidecar = json.loads(path.read_text())
        sidecar["provenance"]["codecs"]["libjpeg"] = "libjpeg 9e"
        path.write_text(json.dumps(sidecar))
    bench("run", *JOB, "metric=[ssim]", "hydra.run.dir=b", cwd=workdir)
    stats = json.loads((workdir / "b" / "stats.json").read_text())
    assert stats["stages"]["transform"]["cached"] == 3
    (elsewhere,) = stats["cached_provenance"]
    assert elsewhere["entries"] == {"transform": 3}
    assert elsewhere["provenance"]["codecs"]["libjpeg"] == "libjpeg 9e"

    table = bench("table", "b", "--metric", "ssim", "--pair", "fidelity", cwd=workdir)
    assert table.stderr.count("mixes") == 1 and "libjpeg builds" in table.stderr
    assert "libjpeg 9e" in table.stdout and stats["provenance"]["codecs"]["libjpeg"] in \
        table.stdout
    clean = bench("table", "a", "--metric", "psnr", "--pair", "fidelity", cwd=workdir)
    assert "mixes" not in clean.stderr and "Provenance: bench" in clean.stdout


def record(version: str = "0.1.0", revision: str = "a1b2c3d4e5f6a7b8", libjpeg: str = "9e"):
    return {"bench": {"version": version, "commit": "f" * 40, "dirty": False},
            "python": "3.11.7", "platform": "Linux",
            "packages": {"torch": "2.5.1", "diffusers": "0.31.0", "transformers": "4.46.0",
                         "numpy": "2.1.0", "Pillow": "11.0.0", "kornia": "0.7.3"},
            "codecs": {"libjpeg": f"libjpeg {libjpeg}", "opencv_libjpeg": "x"},
            "device": {"type": "cuda", "name": "NVIDIA H200", "cuda": "12.4", "cudnn": 90100},
            "weights": {"generator.model": {"model": "sd15/sd", "kind": "hf",
                                            "revision": revision}}}


def write_job(job, defense: str, provenance_record: dict | None) -> None:
    job.mkdir(parents=True)
    pd.DataFrame([{"dataset": "d", "image_id": "a", "defense": defense, "transform": "jpeg",
                   "generator": "sd", "seed": 0, "pair": "edit", "metric": "ssim",
                   "value": 0.5, "n": 1}]).to_csv(job / "samples.csv", index=False)
    stats = {"directions": {"ssim": True}}
    if provenance_record is not None:
        stats["provenance"] = provenance_record
    (job / "stats.json").write_text(json.dumps(stats))
    (job / "status.json").write_text('{"status": "done"}')


def test_table_footnotes_say_which_versions_made_the_cells(tmp_path):
    write_job(tmp_path / "jobs" / "a", "photoguard", record())
    write_job(tmp_path / "jobs" / "b", "mist", record())
    md = bench("table", "jobs", "--metric", "ssim", "--pair", "edit", cwd=tmp_path)
    note = md.stdout.splitlines()[-1]
    assert note.startswith("Provenance: bench 0.1.0 (ffffffffff)")
    for fact in ("Python 3.11.7", "torch 2.5.1", "diffusers 0.31.0", "transformers 4.46.0",
                 "numpy 2.1.0", "kornia 0.7.3", "Pillow 11.0.0 (libjpeg 9e)",
                 "NVIDIA H200 (CUDA 12.4, cuDNN 90100)", "weights sd15/sd@a1b2c3d4e5f6"):
        assert fact in note, fact
    assert "mixes" not in md.stderr
    latex = bench("table", "jobs", "--metric", "ssim", "--pair", "edit", "--format", "latex",
                  cwd=tmp_path).stdout
    assert "{\\footnotesize Provenance: bench 0.1.0" in latex
    assert latex.index("footnotesize") < latex.index("\\end{table}")
    csv = bench("table", "jobs", "--metric", "ssim", "--pair", "edit", "--format", "csv",
                cwd=tmp_path).stdout
    assert "Provenance" not in csv and pd.read_csv(io.StringIO(csv)).shape == (2, 2)


def test_a_table_that_mixes_versions_or_weights_warns_once(tmp_path):
    write_job(tmp_path / "jobs" / "a", "photoguard", record())
    write_job(tmp_path / "jobs" / "b", "mist", record("0.2.0", revision="9" * 40))
    write_job(tmp_path / "jobs" / "c", "noise", None)  # written before provenance
    out = bench("table", "jobs", "--metric", "ssim", "--pair", "edit", cwd=tmp_path)
    assert out.stderr.count("WARNING") == 1
    warning = out.stderr
    assert "bench versions (0.1.0 (ffffffffff) / 0.2.0 (ffffffffff))" in warning
    assert "weights of sd15/sd (sd15/sd@a1b2c3d4e5f6 / sd15/sd@999999999999)" in warning
    assert "with and without a provenance record (1 without)" in warning
    assert "bench 0.1.0 (ffffffffff) / 0.2.0 (ffffffffff)" in out.stdout
    assert "1 result(s) without a record" in out.stdout
    one = bench("table", "jobs", "--metric", "ssim", "--pair", "edit", "--where",
                "defense=photoguard", cwd=tmp_path)  # the cells of one job: nothing mixed
    assert "WARNING" not in one.stderr and "0.2.0" not in one.stdout


def test_sweep_summary_records_each_jobs_provenance(tmp_path):
    done, failed = tmp_path / "0_done", tmp_path / "1_failed"
    write_job(done, "photoguard", record())
    pd.DataFrame([{"dataset": "d", "defense": "photoguard", "transform": "jpeg",
                   "generator": "sd", "pair": "edit", "metric": "ssim", "mean": 0.5,
                   "std": 0.0, "n": 1, "ci95_low": 0.5, "ci95_high": 0.5}]).to_csv(
        done / "summary.csv", index=False)
    failed.mkdir()
    (failed / "status.json").write_text('{"status": "failed", "error": "boom"}')
    summary = sweep_summary(tmp_path).set_index("job")
    assert list(summary.columns[-len(FLAT_COLUMNS):]) == FLAT_COLUMNS
    row = summary.loc["0_done"]
    assert (row["bench_version"], row["commit"], row["torch"], row["libjpeg"], row["device"],
            row["cudnn"]) == ("0.1.0", "f" * 40, "2.5.1", "libjpeg 9e", "NVIDIA H200", 90100)
    assert row["weights"] == "generator.model=sd15/sd@a1b2c3d4e5f6"
    assert pd.isna(summary.loc["1_failed", "torch"])


@pytest.fixture
def fresh_identities():
    provenance.weights_identity.cache_clear()
    provenance._sha256.cache_clear()
    yield
    provenance.weights_identity.cache_clear()
    provenance._sha256.cache_clear()


def test_a_weights_file_is_hashed_once_per_process(tmp_path, monkeypatch, fresh_identities):
    path = tmp_path / "backbone.pth"
    path.write_bytes(b"weights" * 1000)
    calls = []
    real = hub.file_sha256
    monkeypatch.setattr(hub, "file_sha256", lambda p: calls.append(p) or real(p))
    configs = {"metric": {"ism": {"weights": str(path), "arch": "r100"}},
               "defense": {"encoder": {"model": "tiny/sd"}, "eps": 8, "face_model": "random"}}
    for _ in range(10):  # one job's batches, images, stages
        found = weights(configs)
    assert len(calls) == 1
    assert found["metric.ism.weights"] == {
        "model": str(path), "kind": "file", "bytes": 7000,
        "sha256": hashlib.sha256(b"weights" * 1000).hexdigest()}
    assert found["defense.encoder.model"] == {"model": "tiny/sd", "kind": "built-in"}
    assert found["defense.face_model"] == {"model": "random", "kind": "name"}
    assert "defense.eps" not in found


def test_hugging_face_models_are_identified_by_revision(tmp_path, monkeypatch,
                                                        fresh_identities):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    blob = "ab" * 32  # the HF cache names a large file's blob by its sha256
    (repo / "blobs").mkdir()
    (repo / "blobs" / blob).write_bytes(b"not hashed")
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    (snapshot / "net.pth").symlink_to(repo / "blobs" / blob)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "hub_cache_dir", lambda: str(cache))
    monkeypatch.setattr(hub, "file_sha256", lambda p: pytest.fail("hashed an LFS blob"))
    found = weights({"generator": {"model": "org/model", "adapter": "org/absent"},
                     "transform": {"gfpgan": {"model": "org/model/net.pth"}}})
    assert found["generator.model"] == {"model": "org/model", "kind": "hf",
                                        "revision": "0123456789abcdef0123456789abcdef01234567"}
    assert found["generator.adapter"]["kind"] == "missing"
    assert found["transform.gfpgan.model"] == {
        "model": "org/model/net.pth", "kind": "file", "bytes": 10, "sha256": blob,
        "revision": "0123456789abcdef0123456789abcdef01234567"}


def git(root, *args) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t",
                           *args], capture_output=True, text=True, check=True).stdout.strip()


def test_the_commit_and_dirty_flag_of_a_checkout(tmp_path, monkeypatch):
    root = tmp_path / "bench"
    (root / "benchmark").mkdir(parents=True)
    (root / "benchmark" / "__init__.py").write_text("")
    (root / "README.md").write_text("read me\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    head = git(root, "rev-parse", "HEAD")
    assert checkout(root) == {"commit": head, "dirty": False}
    (root / "README.md").write_text("edited\n")  # not shipped in the wheel: not what runs
    assert checkout(root) == {"commit": head, "dirty": False}
    (root / "benchmark" / "new_defense.py").write_text("x = 1\n")  # untracked code runs too
    assert checkout(root) == {"commit": head, "dirty": True}
    monkeypatch.setattr(provenance, "_git", lambda *args: None)  # no git on this node
    assert checkout(root) == {"commit": head, "dirty": None}
    assert checkout(tmp_path / "site-packages") == {"commit": None, "dirty": None}
