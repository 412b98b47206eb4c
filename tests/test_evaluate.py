"""hqg.evaluate / hqg.benchmark and their commands: the harness's files, reference-free mode, bad inputs, resume."""
import csv, json, shutil
from pathlib import Path

import pytest
import torch

from hqg.benchmark import benchmark, claim_check, results_table, summarize_runs
from hqg.cli import main
from hqg.evaluate import evaluate, find_eval_set, score_image
from hqg.io import read_image, write_image

ROOT = Path(__file__).resolve().parents[1]
FUNDUS, CCM, MODEL = ROOT / "data_samples" / "fundus", ROOT / "data_samples" / "ccm", ROOT / "data_samples" / "models" / "fundus_tiny.pt"
SMOKE = {"data.size": 32, "data.batch_size": 2, "train.pretrain_guidance_steps": 0, "train.val_every": None,
         "train.device": "cpu", "train.sample_every": 1000, "train.ckpt_every": 1000}


def test_evaluate_with_ground_truth_writes_every_file_and_scores_the_shipped_model(tmp_path):
    r = evaluate(MODEL, FUNDUS, tmp_path, device="cpu", verbose=False)
    rows = list(csv.DictReader(open(tmp_path / "per_image.csv")))
    assert len(rows) == 4 and {"image", "psnr", "psnr_in", "ssim", "ssim_in", "structure"} <= set(rows[0])
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["has_ground_truth"] and m["n_images"] == 4 and m["note"] == ""
    assert 19.0 < m["mean"]["psnr_in"] < 19.7 and m["mean"]["psnr"] > 24.0  # README: 19.35 -> 25.47 dB
    assert sorted(p.name for p in (tmp_path / "enhanced").iterdir()) == sorted(p.name for p in (FUNDUS / "test" / "lq").iterdir())
    assert "| PSNR (dB) | 19.35" in (tmp_path / "table.md").read_text()


def test_folder_without_ground_truth_reports_reference_free_metrics_and_says_why(tmp_path, capsys):
    assert main(["evaluate", "--method", "clahe", "--data", str(CCM / "test" / "lq"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no ground truth for" in out and "only the reference-free metrics" in out
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert not m["has_ground_truth"] and "psnr" not in m["mean"] and "ssim" not in m["mean"]
    assert 0.5 < m["mean"]["structure"] < 1.0  # CLAHE changes structure a little, never by definition 1
    assert "no ground truth" in (tmp_path / "table.md").read_text()


def test_identity_scores_equal_the_input_and_ccm_snr_appears_for_gray_nerve_images(tmp_path):
    r = evaluate("identity", CCM, tmp_path, plots=False, save_images=False, verbose=False)
    assert r["mean"]["psnr"] == pytest.approx(r["mean"]["psnr_in"], abs=1e-5)
    assert r["mean"]["structure"] == pytest.approx(1.0, abs=1e-5)
    assert r["mean"]["snr"] == pytest.approx(r["mean"]["snr_in"], abs=1e-5)


def test_a_broken_image_is_skipped_and_named_and_the_rest_scored(tmp_path, capsys):
    data = tmp_path / "imgs"; data.mkdir()
    for p in sorted((FUNDUS / "test" / "lq").iterdir())[:2]: shutil.copy(p, data / p.name)
    (data / "broken.png").write_bytes(b"not a png")
    assert main(["evaluate", "--method", "identity", "--data", str(data), "--out", str(tmp_path / "o")]) == 1
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["n_images"] == 2 and [f["image"] for f in m["failed"]] == ["broken.png"] and "broken.png" in m["failed"][0]["error"]


def test_ground_truth_of_another_size_is_a_clear_error(tmp_path):
    (tmp_path / "lq").mkdir(); (tmp_path / "gt").mkdir()
    write_image(tmp_path / "lq" / "a.png", torch.rand(3, 32, 32)); write_image(tmp_path / "gt" / "a.png", torch.rand(3, 40, 32))
    with pytest.raises(ValueError, match=r"ground truth .*a.png has shape \(3, 40, 32\) but input .*a.png has \(3, 32, 32\)"):
        evaluate("identity", tmp_path, tmp_path / "o", verbose=False)


def test_evaluate_command_needs_exactly_one_method(tmp_path, capsys):
    assert main(["evaluate", "--data", str(FUNDUS), "--out", str(tmp_path)]) == 2
    assert "exactly one of --checkpoint CKPT or --method NAME" in capsys.readouterr().err
    assert main(["evaluate", "--method", "unsharp", "--data", str(FUNDUS), "--out", str(tmp_path)]) == 2
    assert "neither a checkpoint file nor a classical method (identity, gamma, clahe" in capsys.readouterr().err


def test_benchmark_resume_keeps_finished_runs(tmp_path):
    b = benchmark(["identity", "hqg"], FUNDUS, seeds=[0], steps=1, out=tmp_path, device="cpu", overrides=SMOKE, verbose=False)
    ck = b / "train" / "hqg" / "seed0" / "checkpoints" / "last.pt"
    before = ck.stat().st_mtime_ns
    b2 = benchmark(["identity", "hqg"], FUNDUS, seeds=[0], steps=1, out=tmp_path, device="cpu", resume=True, verbose=False)
    assert b2 == b and ck.stat().st_mtime_ns == before  # nothing retrained
    wall = (b / "train" / "hqg" / "seed0" / "wall_seconds.txt").read_text()
    shutil.rmtree(b / "eval" / "hqg")  # re-evaluate a finished run (e.g. with a newer harness): no retraining either
    benchmark(["identity", "hqg"], FUNDUS, seeds=[0], out=tmp_path, device="cpu", resume=True, verbose=False)
    assert ck.stat().st_mtime_ns == before and (b / "train" / "hqg" / "seed0" / "wall_seconds.txt").read_text() == wall
    assert (b / "eval" / "hqg" / "seed0" / "metrics.json").is_file()
    res = json.loads((b / "results.json").read_text())
    assert [r["method"] for r in res["runs"]] == ["identity", "hqg"] and res["summary"]["hqg"]["psnr"]["n"] == 1


def test_benchmark_rejects_unknown_methods_before_training(tmp_path, capsys):
    assert main(["benchmark", "--methods", "hqg", "pix2pix", "--data", str(FUNDUS), "--out", str(tmp_path)]) == 2
    assert "methods: unknown ['pix2pix']" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_summary_table_and_claim_check_values():
    rows = [{"method": "hqg", "seed": s, "psnr": 25.0 + s, "psnr_in": 19.0, "ssim": 0.8, "ssim_in": 0.7, "structure": 0.99,
             "train_s": 10.0} for s in range(3)] + \
           [{"method": "cyclegan", "seed": s, "psnr": 20.0, "psnr_in": 19.0, "ssim": 0.81, "ssim_in": 0.7, "structure": 0.9,
             "train_s": 20.0} for s in range(3)]
    s = summarize_runs(rows)
    assert s["hqg"]["psnr"] == (26.0, 1.0, 3) and s["cyclegan"]["psnr"] == (20.0, 0.0, 3)
    table = results_table(s)
    assert "| hqg | 26.00 ± 1.00 | 0.8000 ± 0.0000 | 0.9900 ± 0.0000 | 3 | 10 |" in table
    assert "| *input (LQ)* | 19.00 | 0.7000 | 1 | | |" in table
    lines = claim_check(s, others=("cyclegan",))
    assert lines[0].endswith("better") and "SSIM" in lines[1] and lines[1].endswith("worse")


def test_benchmark_resume_restarts_a_run_killed_before_its_first_checkpoint(tmp_path):
    b = benchmark(["hqg"], FUNDUS, seeds=[0], steps=1, out=tmp_path, device="cpu", overrides=SMOKE, verbose=False)
    run = b / "train" / "hqg" / "seed0"
    shutil.rmtree(b / "eval"); shutil.rmtree(run / "checkpoints")  # as if killed before the first checkpoint
    benchmark(["hqg"], FUNDUS, seeds=[0], out=tmp_path, device="cpu", resume=True, verbose=False)
    assert (run / "checkpoints" / "last.pt").is_file() and (b / "eval" / "hqg" / "seed0" / "metrics.json").is_file()
    kept = [p.name for p in run.parent.iterdir() if p.name.startswith("seed0.unfinished-")]
    assert len(kept) == 1 and (run.parent / kept[0] / "config.yaml").is_file()  # nothing deleted


def test_benchmark_workers_give_the_same_results_as_one_process(tmp_path):
    kw = dict(seeds=[0], steps=2, device="cpu", overrides=SMOKE, verbose=False)
    a = benchmark(["hqg", "hqg-no-vnm"], FUNDUS, out=tmp_path / "a", workers=1, **kw)
    b = benchmark(["hqg", "hqg-no-vnm"], FUNDUS, out=tmp_path / "b", workers=2, **kw)
    ra, rb = (json.loads((x / "results.json").read_text())["runs"] for x in (a, b))
    for x, y in zip(ra, rb):
        assert (x["method"], x["seed"]) == (y["method"], y["seed"])
        assert x["psnr"] == pytest.approx(y["psnr"], abs=1e-4) and x["ssim"] == pytest.approx(y["ssim"], abs=1e-5)
    with pytest.raises(ValueError, match="workers: expected an int >= 1, got 0"):
        benchmark(["hqg"], FUNDUS, out=tmp_path / "c", workers=0, **kw)


def test_claim_check_does_not_judge_single_seeds():
    s = {"hqg": {"psnr": (25.0, 0.0, 1)}, "cyclegan": {"psnr": (22.0, 0.0, 1)}}
    assert claim_check(s, others=("cyclegan",)) == ["hqg vs cyclegan, PSNR (dB): 25 vs 22 (+3): not judged (one seed: no spread to compare with)"]
