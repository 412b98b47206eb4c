"""hqg.app.downstream: segmenter scores against hand-computed values, the table writer, acceptance, scoring real checkpoints."""
import csv, json, math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from hqg.data import UnpairedDataset
from hqg.app.downstream import (SETTINGS, acceptance, downstream_table, run_downstream_experiment, score_runs,
                            segment_probs, segment_scores)
from hqg.model.losses import HQGLoss
from hqg.model.networks import HQGNet, Segmenter
from hqg.train.hqg import Trainer

ROOT = Path(__file__).resolve().parents[1]
VESSELS = ROOT / "data_samples" / "vessels"


class Threshold(nn.Module):
    "Logit (x - 0.5) * 10 of the first channel: probability > 0.5 exactly where x > 0.5."
    def __init__(self):
        super().__init__(); self.scale = nn.Parameter(torch.tensor(10.0))
    def forward(self, x): return (x[:, :1] - 0.5) * self.scale


def _example():
    x = torch.tensor([[0.9, 0.8, 0.1, 0.1], [0.7, 0.2, 0.1, 0.1], [0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.3]])[None]
    m = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)[None]
    return x, m


def test_segment_scores_match_hand_computed_values():
    x, m = _example()
    # P = {(0,0),(0,1),(1,0),(2,0)}, M = {(0,0),(0,1),(1,1),(2,0)}: |P∩M| = 3 -> Dice 6/8, IoU 3/5.
    # AUC: positives 0.9, 0.8, 0.6, 0.2 vs 12 negatives (0.7, 0.3, ten 0.1): (12 + 12 + 11 + 10) / 48.
    s = segment_scores(Threshold(), x, m)
    assert s["dice"] == pytest.approx(0.75) and s["iou"] == pytest.approx(0.6) and s["auc"] == pytest.approx(45 / 48)
    # a second, empty image: Dice = IoU = 1 (both empty), AUC undefined (NaN) and skipped in the mean
    s2 = segment_scores(Threshold(), torch.stack([x, torch.zeros(1, 4, 4)]), torch.stack([m, torch.zeros(1, 4, 4)]))
    assert s2["per_image"]["dice"] == pytest.approx([0.75, 1.0]) and s2["per_image"]["iou"] == pytest.approx([0.6, 1.0])
    assert math.isnan(s2["per_image"]["auc"][1]) and s2["auc"] == pytest.approx(45 / 48)
    assert (s2["dice"], s2["iou"]) == (pytest.approx(0.875), pytest.approx(0.8))
    # threshold: 0.99 on the probability keeps only x >= 0.96 -> nothing -> Dice 0
    assert segment_scores(Threshold(), x, m, threshold=0.99)["dice"] == pytest.approx(0.0, abs=1e-12)
    # lists of different sizes, and the segmenter's mode is restored
    seg = Threshold().train()
    p = segment_probs(seg, [x, torch.rand(3, 5, 7)])
    assert [t.shape for t in p] == [(1, 4, 4), (1, 5, 7)] and seg.training
    assert torch.allclose(p[0], torch.sigmoid((x - 0.5) * 10))


def test_segment_scores_errors():
    x, m = _example()
    with pytest.raises(ValueError, match="one mask per image"): segment_scores(Threshold(), x, [m, m])
    with pytest.raises(ValueError, match=r"masks\[0\]: expected shape \(1, 4, 4\)"): segment_scores(Threshold(), x, torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="images: expected"): segment_scores(Threshold(), "x.png", m)


def test_downstream_table_values_and_files(tmp_path):
    res = {"A": {"dice": [0.6, 0.8, 0.7], "psnr": [20.0, 21.0, 22.0]}, "B": {"dice": 0.5, "auc": [float("nan"), 0.9]}}
    ex = {"mask": torch.zeros(1, 8, 8), "images": {"A": torch.rand(3, 8, 8), "B": torch.rand(3, 8, 8)},
          "preds": {"A": torch.rand(1, 8, 8), "B": torch.rand(1, 8, 8)}}
    rows = downstream_table(res, tmp_path, examples=ex, name="tab", digits=2)
    a, b = rows
    assert (a["setting"], a["n"], b["n"]) == ("A", 3, 1)
    assert a["dice_mean"] == pytest.approx(0.7) and a["dice_std"] == pytest.approx(0.1)
    assert a["psnr_mean"] == pytest.approx(21.0) and a["psnr_std"] == pytest.approx(1.0)
    assert math.isnan(a["auc_mean"]) and (b["auc_mean"], b["auc_std"]) == (pytest.approx(0.9), pytest.approx(0.0, abs=1e-12))
    md = (tmp_path / "tab.md").read_text().splitlines()
    assert md[0] == "| setting | n | dice | psnr | auc |"
    assert md[2] == "| A | 3 | 0.70 ± 0.10 | 21.00 ± 1.00 | – |"
    assert md[3] == "| B | 1 | 0.50 ± 0.00 | – | 0.90 ± 0.00 |"
    with open(tmp_path / "tab.csv") as f: c = list(csv.DictReader(f))
    assert list(c[0]) == ["setting", "n", "dice_mean", "dice_std", "psnr_mean", "psnr_std", "auc_mean", "auc_std"]
    assert float(c[0]["dice_mean"]) == pytest.approx(0.7) and c[0]["auc_mean"] == "" and c[1]["psnr_std"] == ""
    j = json.loads((tmp_path / "tab.json").read_text())
    assert j["results"]["B"]["auc"] == [None, 0.9] and j["results"]["A"]["dice"] == [0.6, 0.8, 0.7]
    assert j["rows"][0]["auc_mean"] is None and j["rows"][1]["dice_mean"] == pytest.approx(0.5, abs=1e-12)
    assert (tmp_path / "tab.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="results: expected a non-empty mapping"): downstream_table({}, tmp_path)
    with pytest.raises(ValueError, match=r"examples: missing \['preds'\]"):
        downstream_table(res, tmp_path, examples={"mask": ex["mask"], "images": ex["images"]})


def test_acceptance_criteria():
    row = lambda s, d, p, q: {"setting": s, "dice_mean": d, "psnr_mean": p, "ssim_mean": q}
    rows = [row("S_hq on LQ", 0.5, 18, 0.7), row("S_hq on enhance-only", 0.6, 20, 0.80), row("S_hq on bi-level", 0.6, 19.1, 0.79),
            row("S_run on bi-level", 0.7, 19.1, 0.79)]
    assert acceptance(rows) == {"dice_above_lq": True, "dice_not_below_enhance": True, "psnr_within_tol": True, "ssim_within_tol": True}
    rows[2] = row("S_hq on bi-level", 0.59, 18.9, 0.77)
    assert acceptance(rows) == {"dice_above_lq": True, "dice_not_below_enhance": False, "psnr_within_tol": False, "ssim_within_tol": False}


def _run_folder(tmp_path, name, with_seg):
    torch.manual_seed(0)
    tiny = dict(gen_base=8, gen_max_width=32, disc_base=8, disc_max_width=32, enc_base=8, enc_depth=3, enc_max_width=32,
                latent=16, vnm_hidden=32, seg_base=8, seg_max_width=32)
    tr = Trainer(HQGNet(3, "tiny", with_seg=with_seg, **tiny), HQGLoss(), UnpairedDataset(VESSELS, size=32),
                 run_dir=tmp_path / name, batch_size=2, progress=False, log_every=0, sample_every=0, ckpt_every=0, default_guidance=2)
    tr.fit(1)
    return tmp_path / name, tr


def test_score_runs_on_real_checkpoints(tmp_path):
    run_e, _ = _run_folder(tmp_path, "e", False)
    run_b, tr_b = _run_folder(tmp_path, "b", True)
    torch.manual_seed(1)
    seg_hq = Segmenter(3, 1, base=8, depth=2, max_width=16)
    res, ex = score_runs(run_e, run_b, seg_hq, VESSELS)
    assert list(res) == list(SETTINGS) and all(set(r) == {"dice", "iou", "auc", "psnr", "ssim"} for r in res.values())
    assert all(0 <= r["dice"] <= 1 and 0 <= r["auc"] <= 1 for r in res.values())
    # same images -> same image metrics; same segmenter on the same images -> same scores
    assert res["S_hq on bi-level"]["psnr"] == pytest.approx(res["S_run on bi-level"]["psnr"], rel=1e-6)
    net_b = HQGNet.from_checkpoint(run_b / "checkpoints" / "last.pt")
    from hqg.data import PairedTestSet
    test = PairedTestSet(VESSELS)
    lq = torch.stack([test[i]["lq"] for i in range(len(test))]); mk = torch.stack([test[i]["mask"] for i in range(len(test))])
    assert res["S_run on bi-level"]["dice"] == pytest.approx(segment_scores(tr_b.net.seg, net_b.enhance(lq), mk)["dice"])
    assert res["S_hq on LQ"]["dice"] == pytest.approx(segment_scores(seg_hq, lq, mk)["dice"])
    assert ex["images"]["S_hq on LQ"].shape == (3, 128, 128) and ex["preds"]["S_run on bi-level"].shape == (1, 128, 128)
    with pytest.raises(ValueError, match="not a bi-level run"):
        score_runs(run_b, run_e, seg_hq, VESSELS)


def test_experiment_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="fundus has no folder masks/"):
        run_downstream_experiment(ROOT / "data_samples" / "fundus", out=tmp_path)
    (tmp_path / "downstream.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds a downstream table"):
        run_downstream_experiment(VESSELS, out=tmp_path)


@pytest.mark.slow
def test_smoke_experiment(tmp_path):
    smoke = {"data.size": 32, "data.batch_size": 2, "train.pretrain_guidance_steps": 1}
    rows = run_downstream_experiment(VESSELS, seeds=(0,), steps=1, out=tmp_path, overrides=smoke,
                                     bilevel_overrides={"bilevel.pretrain_seg_steps": 1}, seg_hq_steps=1, device="cpu")
    assert [r["setting"] for r in rows] == list(SETTINGS) and all(r["n"] == 1 for r in rows)
    meta = json.loads((tmp_path / "downstream.json").read_text())
    assert meta["steps"] == 1 and len(meta["runs"]) == 1 and set(meta["acceptance"]) == set(acceptance(rows))
    assert (Path(meta["runs"][0]["bilevel"]) / "checkpoints" / "last.pt").is_file()
