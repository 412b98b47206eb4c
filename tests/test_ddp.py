"""DDP for every method through the one training loop: 2 gloo processes on the CPU, launched by torchrun."""
import os, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def equal(a: dict, b: dict) -> bool:  # exact: DDP lockstep on one machine, and resume, are bit-for-bit here
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def launch(method: str, out: Path, data: Path | None = None) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), method, str(out), str(data)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.parametrize("method", ["hqg", "bilevel", "cyclegan"])
def test_torchrun_two_ranks_train_identically_and_resume_exactly(tmp_path, method):
    data = tmp_path / "vessels"       # the bi-level set with masks for 3 of its 8 LQ images
    shutil.copytree(ROOT / "data_samples" / "vessels", data, ignore=shutil.ignore_patterns("test"))
    for p in sorted((data / "masks").iterdir())[3:]: p.unlink()
    r0, r1 = launch(method, tmp_path, data)
    assert (r0["world"], r0["wrapped"]) == (2, "DistributedDataParallel")
    nets = r0["init"].keys()
    assert "ema" in nets and ({"gen_lq", "disc_lq"} <= nets if method == "cyclegan" else True)
    assert ("seg" in nets) == (method == "bilevel")
    for name in nets:
        assert equal(r0["init"][name], r1["init"][name]), name        # rank 0's weights broadcast at the start
        assert equal(r0["straight"][name], r1["straight"][name]), name  # identical after 4 steps on different shards
        assert equal(r0["resumed"][name], r0["straight"][name]), name   # a fresh trainer resumed at step 2 reaches them
    moved = [n for n in ("gen", "disc", "ema", "gen_lq", "seg") if n in nets
             and not equal(r0["straight"][n], r0["init"][n])]
    assert len(moved) >= (4 if method == "cyclegan" else 3), moved     # the trained nets moved (enc_hq stays frozen)
    if method == "bilevel":  # some rank had a batch without masks: it joined the S all-reduce with a zero loss
        assert r0["no_mask_batches"] + r1["no_mask_batches"] >= 1
    assert r0["rows"]["step"] == 4 and abs(r0["rows"]["g_total"] - r1["rows"]["g_total"]) < 1e-6  # logged means agree


@pytest.mark.parametrize("config", ["tiny+cyclegan", "tiny-bilevel"])
def test_hqg_train_nproc_launches_torchrun(tmp_path, config):
    out = tmp_path / "runs"
    data = ROOT / "data_samples" / ("vessels" if "bilevel" in config else "fundus")
    sets = ["data.size=32", "data.batch_size=2", "train.pretrain_guidance_steps=0", "train.val_every=null",
            "train.sample_every=100", "train.log_every=1", "model.overrides.gen_max_width=32"]
    if "bilevel" in config: sets += ["bilevel.pretrain_seg_steps=0", "bilevel.warmup_steps=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "hqg.app.cli", "train", "--nproc", "2", "--config", config, "--data", str(data),
                        "--out", str(out), "--max-steps", "2", "--device", "cpu", "--set", *sets],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc_per_node 2 -m hqg.app.cli train" in p.stdout
    runs = [d for d in out.iterdir() if d.is_dir()]
    assert len(runs) == 1                                                   # both ranks wrote into one run folder
    ck = torch.load(runs[0] / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == 2 and ck["train_state"]["settings"]["world_size"] == 2
    assert ("gen_lq" in ck["train_state"]) == ("cyclegan" in config) and ("opt_s" in ck["train_state"]) == ("bilevel" in config)
