"""The GPU path (issue 17): bf16 autocast, channels_last, the fast `paper` preset on CUDA, a papermill run with
`-p device cuda`. Marked `gpu` (make test deselects them) and skipped without CUDA; run with `pytest -m gpu`."""
import json
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
ROOT = Path(__file__).resolve().parents[1]


def test_paper_enhance_on_cuda_matches_cpu():
    from hqg.model.networks import HQGNet
    torch.manual_seed(0)
    net = HQGNet(3, "paper").eval()
    x, z = torch.rand(1, 3, 96, 128), torch.rand(1, 3, 128, 128)
    cpu = net.enhance(x, z)
    with torch.backends.cudnn.flags(enabled=True, deterministic=True, benchmark=False, allow_tf32=False):
        gpu = net.to("cuda").enhance(x.cuda(), z.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=0)   # fp32 both sides (no TF32 convolutions)


def test_bf16_amp_channels_last_training_steps_are_finite_and_move_the_weights(tmp_path):
    from hqg.app.speed import bench_training
    r = bench_training("tiny", batch=4, image_size=64, steps=3, device="cuda", amp=True, channels_last=True, verbose=False)
    assert r["amp"] and r["channels_last"] and r["images_per_s"] > 0 and r["peak_mem_mb"] > 0
    p = bench_training("paper", batch=2, image_size=128, steps=2, device="cuda", amp=True, channels_last=True, verbose=False)
    assert p["images_per_s"] > 0


def test_compare_on_cuda_reports_bf16_in_its_own_column():
    from hqg.app.speed import compare_speed
    rows = compare_speed(image_size=128, repeats=2, device="cuda", presets=("paper", "paper-wide"), verbose=False)
    assert [r["name"] for r in rows] == ["hqg paper", "hqg paper-wide", "released"]
    for r in rows: assert r["forward_ms"] > 0 and r["forward_bf16_ms"] > 0 and r["memory_method"] == "cuda"
    fast, wide, released = rows
    assert fast["forward_ms"] < released["forward_ms"] and fast["train_step_ms"] < released["train_step_ms"]


def test_papermill_training_notebook_runs_on_cuda(tmp_path):
    from hqg.app.runs import run_notebook
    done = run_notebook(ROOT / "nbs" / "experiments" / "20_train_hqg.ipynb",
                        dict(preset="tiny", device="cuda", max_steps=4, image_size=64, batch_size=2,
                             data_root=str(ROOT / "data_samples" / "fundus")), tmp_path, cwd=ROOT)
    cells = json.loads(done.read_text(encoding="utf-8"))["cells"]
    assert not any(o.get("output_type") == "error" for c in cells for o in c.get("outputs", []))
    assert "cuda" in "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))


def test_compiled_generator_trains_on_cuda():
    from hqg.app.speed import bench_training
    r = bench_training("tiny", batch=4, image_size=64, steps=3, device="cuda", amp=True, channels_last=True, compile=True,
                       verbose=False)
    assert r["compile"] and r["images_per_s"] > 0 and r["first_step_s"] > r["s_per_step"]
