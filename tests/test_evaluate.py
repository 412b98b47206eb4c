"""hqg.eval.evaluate / hqg.app.benchmark and their commands: the harness's files, reference-free mode, bad inputs, resume."""
import csv, json, math, shutil
from pathlib import Path

import pytest
import torch

from hqg.app.benchmark import benchmark, claim_check, results_table, summarize_runs
from hqg.app.cli import main
from hqg.eval.evaluate import evaluate, find_eval_set, score_image
from hqg.data.io import read_image, write_image

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
    assert 19.0 < m["mean"]["psnr_in"] < 19.7 and m["mean"]["psnr"] > 23.0  # README: 19.35 -> 24.20 dB (shipped model)
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


def test_color_transfer_baseline_copies_the_reference_tone_from_the_command_line(tmp_path, capsys):
    # the default reference: the set's reference-style HQ files (the shipped model's default guide)
    assert main(["evaluate", "--method", "color-transfer", "--data", str(FUNDUS), "--out", str(tmp_path / "a"), "--no-images"]) == 0
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())["mean"]
    assert m["psnr"] > m["psnr_in"] + 3.0 and m["structure"] > 0.99  # README: 19.35 -> 23.88 dB, a colour shift only
    assert m["vessel_contrast"] == pytest.approx(m["vessel_contrast_in"], abs=0.01)
    guide = FUNDUS / "guides" / "guide_warm.png"  # a warmer reference gives a redder output
    assert main(["evaluate", "--method", "color-transfer", "--data", str(FUNDUS), "--out", str(tmp_path / "w"),
                 "--guidance", str(guide), "--no-images"]) == 0
    mw = json.loads((tmp_path / "w" / "metrics.json").read_text())["mean"]
    assert mw["psnr"] < m["psnr"]  # the ground truth is in the reference tone
    imgs = tmp_path / "imgs"; shutil.copytree(FUNDUS / "test" / "lq", imgs)  # images without an hq/ folder near them
    assert main(["evaluate", "--method", "color-transfer", "--data", str(imgs), "--out", str(tmp_path / "x")]) == 2
    assert "color-transfer: no reference for" in capsys.readouterr().err


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
    assert "neither a checkpoint file nor a classical method (identity, gamma, clahe, color-transfer" in capsys.readouterr().err


def test_benchmark_resume_keeps_finished_runs(tmp_path):
    guides = sorted((FUNDUS / "hq").iterdir())[:2]  # guidance columns for the HQG-Net run; kept in the plan on resume
    b = benchmark(["identity", "hqg"], FUNDUS, seeds=[0], steps=1, out=tmp_path, device="cpu", overrides=SMOKE, verbose=False,
                  guides=guides)
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
    assert 0 <= res["runs"][1]["guidance_following"] <= 1 and "guidance_spread" not in res["runs"][0]  # re-evaluated with the plan's guides
    assert json.loads((b / "eval" / "hqg" / "seed0" / "metrics.json").read_text())["guidance"]["K"] == 2


def test_benchmark_rejects_unknown_methods_before_training(tmp_path, capsys):
    assert main(["benchmark", "--methods", "hqg", "pix2pix", "--data", str(FUNDUS), "--out", str(tmp_path)]) == 2
    assert "methods: unknown ['pix2pix']" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_summary_table_and_claim_check_values():
    rows = [{"method": "hqg", "seed": s, "psnr": 25.0 + s, "psnr_in": 19.0, "ssim": 0.8, "ssim_in": 0.7, "structure": 0.99,
             "train_s": 10.0} for s in range(3)] + \
           [{"method": "cyclegan", "seed": s, "psnr": 20.0, "psnr_in": 19.0, "ssim": 0.81, "ssim_in": 0.7, "structure": 0.9,
             "train_s": 20.0} for s in range(3)]
    s = summarize_runs(rows)
    for m, (mean, std, n) in (("hqg", (26.0, 1.0, 3)), ("cyclegan", (20.0, 0.0, 3))):   # mean, std over seeds, n
        got = s[m]["psnr"]
        assert len(got) == 3 and got[2] == n                    # exact: a count
        assert got[0] == pytest.approx(mean, abs=1e-12) and got[1] == pytest.approx(std, abs=1e-12)
    table = results_table(s)
    # exact: formatted strings (rounded to 2/4 decimals, far from a rounding boundary)
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


# --- "enhance, don't recolour" columns and guidance (hqg.eval.evaluate.score_image, evaluate(guides=...)) ---

def _eye(size=64, seed=0):
    "A synthetic whole-eye RGB view: a bright textured disk on a black surround, (1,3,H,W)."
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disk = ((xx ** 2 + yy ** 2) < 0.7).float()
    tex = 0.5 + 0.15 * torch.sin(9 * xx) * torch.cos(7 * yy) + 0.02 * torch.randn(size, size, generator=g)
    return (disk * tex * torch.tensor([1.0, 0.6, 0.3]).view(3, 1, 1))[None].clamp(0, 1)


def test_score_image_adds_vessel_contrast_noise_and_border_columns():
    gt = _eye(); x_lq = 0.3 + 0.4 * gt  # washed out, and a grey surround
    s = score_image(x_lq, gt.clone(), gt)  # a perfect "enhancer"
    new = {"vessel_contrast", "vessel_contrast_in", "noise", "noise_in", "border", "border_in"}
    assert new <= set(s) and {"psnr", "psnr_in", "ssim", "ssim_in", "structure", "uniformity", "uniformity_in"} <= set(s)
    assert s["vessel_contrast"] == pytest.approx(1.0, abs=1e-6) and s["vessel_contrast_in"] == pytest.approx(0.4, abs=0.02)
    assert s["border"] < 0.01 and s["border_in"] == pytest.approx(0.3, abs=0.01)  # FOV from the gt: the disk
    inner = gt[..., 16:48, 16:48]  # inside the disk
    noisy = (inner + 0.05 * torch.randn(inner.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    s2 = score_image(inner, noisy)  # no gt: contrast against the input, input ratio 1 by definition
    assert s2["vessel_contrast_in"] == 1.0 and s2["noise"] > 2 * s2["noise_in"]   # exact: the constant 1.0 without gt
    assert s2["vessel_contrast"] == pytest.approx(1.0, abs=0.05)  # white noise lies mostly above the vessel band
    stretched = (inner.mean() + 1.5 * (inner - inner.mean())).clamp(0, 1)
    assert score_image(inner, stretched)["vessel_contrast"] == pytest.approx(1.5, abs=0.05)
    crop = score_image(gt[..., 20:44, 20:44], gt[..., 20:44, 20:44])  # no surround: no border value
    assert math.isnan(crop["border"]) and math.isnan(crop["border_in"])


def test_evaluate_with_guides_writes_guidance_into_metrics_json(tmp_path):
    from hqg.model.networks import HQGNet
    torch.manual_seed(0)
    net = HQGNet(3, "tiny", gen_base=8, enc_base=8, disc_base=8)
    net.set_default_guidance(torch.rand(1, 3, 32, 32))
    data, ds = tmp_path / "data", tmp_path / "guides_ds"
    (data / "lq").mkdir(parents=True); (ds / "hq").mkdir(parents=True)
    for i in range(2): write_image(data / "lq" / f"im{i}.png", _eye(48, seed=i)[0])
    for i, c in enumerate(([1.0, 0.5, 0.3], [1.0, 0.4, 0.2], [0.4, 0.6, 1.0])):
        write_image(ds / "hq" / f"g{i}.png", (_eye(32, seed=9)[0] * torch.tensor(c).view(3, 1, 1)).clamp(0, 1))
    (ds / "manifest.json").write_text(json.dumps({"files": [{"file": f"hq/g{i}.png", "style": {"name": n}}
                                                            for i, n in enumerate(("warm", "warm", "cool"))]}))
    kw = dict(device="cpu", plots=False, save_images=False, diagnostics=False, verbose=False)
    r = evaluate(net, data, tmp_path / "o", guides=ds / "hq", **kw)
    g = json.loads((tmp_path / "o" / "metrics.json").read_text())["guidance"]
    # exact: the dict we wrote to metrics.json, read back (JSON keeps floats' repr)
    assert g == r["guidance"] and (g["K"], g["n_inputs"], g["styles"]) == (3, 2, ["warm", "warm", "cool"])
    assert 0 <= g["following"] <= 1 and g["spread"] > 0 and len(g["guides"]) == 3
    table = (tmp_path / "o" / "table.md").read_text()
    assert "## Guidance" in table and "3 guides (2 styles), 2 inputs" in table and "chance 1/K = 0.333" in table
    rows = list(csv.DictReader(open(tmp_path / "o" / "per_image.csv")))
    assert {"vessel_contrast", "noise", "noise_in", "border", "border_in"} <= set(rows[0])
    assert "guidance" not in evaluate(net, data, tmp_path / "p", **kw)  # no guides: nothing new in metrics.json
    assert "guidance" not in evaluate("identity", data, tmp_path / "q", guides=ds / "hq", **kw)  # no guidance to test
    with pytest.raises(ValueError, match="guides: expected at least 2 guide images, got 1"):
        evaluate(net, data, tmp_path / "r", guides=[ds / "hq" / "g0.png"], **kw)


def test_benchmark_table_has_contrast_noise_border_and_guidance_columns():
    rows = [{"method": "hqg", "seed": s, "psnr": 25.0, "psnr_in": 19.0, "vessel_contrast": 0.9 + 0.1 * s,
             "vessel_contrast_in": 0.8, "noise": 0.01, "noise_in": 0.02, "border": 0.01, "border_in": 0.01,
             "guidance_spread": 0.02, "guidance_following": 0.5} for s in range(2)] + \
           [{"method": "clahe", "seed": None, "psnr": 20.0, "psnr_in": 19.0, "vessel_contrast": 1.2, "vessel_contrast_in": 0.8,
             "noise": 0.03, "noise_in": 0.02, "border": float("nan"), "border_in": 0.01}]
    table = results_table(summarize_runs(rows)).splitlines()   # exact below: formatted strings
    assert table[0] == ("| method | PSNR (dB) | vessel contrast (x reference) | noise std (MAD) | border mean (outside FOV) | "
                        "guidance spread | guidance following | seeds | train s/run |")
    assert table[2] == "| *input (LQ)* | 19.00 | 0.8000 | 0.0200 | 0.0100 | - | - | | |"
    assert table[3] == "| hqg | 25.00 ± 0.00 | 0.9500 ± 0.0707 | 0.0100 ± 0.0000 | 0.0100 ± 0.0000 | 0.0200 ± 0.0000 | 0.5000 ± 0.0000 | 2 | - |"
    assert table[4] == "| clahe | 20.00 ± 0.00 | 1.2000 ± 0.0000 | 0.0300 ± 0.0000 | - | - | - | 1 | - |"


def test_a_test_folder_without_lq_is_refused_not_replaced_by_training_images(tmp_path):
    "A prepared root whose test/ holds only HQ images must not be scored on its training lq/."
    from hqg.eval.evaluate import find_eval_set
    (tmp_path / "lq").mkdir(); (tmp_path / "test" / "hq").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"test has no lq/ folder"): find_eval_set(tmp_path)
