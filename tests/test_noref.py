"""hqg.eval.noref: the HQ-domain NIQE on the sample fundus set (blur, noise, LQ vs GT), GGD fits, the model file, the harness."""
import json, math, shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hqg.data.io import read_image, list_images
from hqg.eval.evaluate import evaluate
from hqg.eval.noref import (NOREF_FILE, NorefConfig, NorefModel, fit_aggd, fit_ggd, fit_noref, fit_noref_folder,
                            load_or_fit_noref, no_reference_metrics, patch_features)

ROOT = Path(__file__).resolve().parents[1]
FUNDUS = ROOT / "data_samples" / "fundus"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return fit_noref(list_images(FUNDUS / "hq"))


@pytest.fixture(scope="module")
def gts():
    return [read_image(p) for p in list_images(FUNDUS / "test" / "gt")]  # held out: not in the HQ fit


def _blur(x: torch.Tensor, s: float) -> torch.Tensor:
    r = math.ceil(3 * s); t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * s * s)); k = (k / k.sum())
    y = F.pad(x[:, None], (r, r, r, r), mode="reflect")
    return F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))[:, 0]


def test_score_rises_monotonically_with_blur_and_noise(model, gts):
    g = torch.Generator().manual_seed(1)
    mean = lambda xs: float(np.mean([model.score(x) for x in xs]))
    blur = [mean([_blur(x, s) if s else x for x in gts]) for s in (0, 1, 2, 3)]
    noise = [mean([(x + s * torch.randn(x.shape, generator=g)).clamp(0, 1) for x in gts]) for s in (0, 0.02, 0.05, 0.1)]
    assert all(a < b for a, b in zip(blur, blur[1:])), blur
    assert all(a < b for a, b in zip(noise, noise[1:])), noise
    assert blur[0] < 4 and blur[3] > 2 * blur[0] and noise[3] > 5 * noise[0]  # measured: 2.2 -> 14 (blur 3), 43 (noise 0.1)


def test_ground_truth_scores_closer_to_hq_than_its_lq_input(model, gts):
    lqs = [read_image(p) for p in list_images(FUNDUS / "test" / "lq")]
    s_gt, s_lq = [model.score(x) for x in gts], [model.score(x) for x in lqs]
    assert all(a < b for a, b in zip(s_gt, s_lq)), (s_gt, s_lq)  # every image, not only on average


def test_save_load_round_trip_is_json_and_scores_the_same(model, gts, tmp_path):
    p = model.save(tmp_path / "m.json")
    d = json.loads(p.read_text())  # plain JSON: no pickle anywhere
    assert (d["format"], d["version"], d["n_images"], d["n_patches"]) == ("hqg-noref", 1, 14, model.n_patches)
    assert d["config"] == {"patch": 32, "min_fov": 0.75, "sharpness": 0.0, "fov": "auto", "work_side": None}
    back = NorefModel.load(p)
    assert back.score(gts[0]) == pytest.approx(model.score(gts[0]), abs=1e-6)
    assert back.cfg == model.cfg


def test_constant_and_tiny_images_give_finite_features_no_nan(model):
    f = patch_features(torch.full((3, 96, 96), 0.4))
    assert f.shape == (9, 36) and torch.isfinite(f).all()
    assert math.isfinite(model.score(torch.full((3, 96, 96), 0.4)))
    assert math.isfinite(model.score(torch.zeros(1, 64, 64)))  # gray, all black: whole image, zero variance
    assert math.isnan(no_reference_metrics(torch.rand(3, 16, 16), model=model)["niqe_hq"])  # no patch: NaN, no crash


def test_ggd_fits_recover_known_shapes():
    g = torch.Generator().manual_seed(0)
    for alpha in (0.8, 1.5, 3.0):  # GGD samples: |x| = G^(1/alpha), G ~ Gamma(1/alpha), random sign
        with torch.random.fork_rng():
            torch.manual_seed(int(alpha * 10))
            mag = torch.distributions.Gamma(torch.tensor(1 / alpha, dtype=torch.float64), 1.0).sample((100_000,))
        v = mag ** (1 / alpha) * (torch.randint(0, 2, (100_000,), generator=g) * 2 - 1)
        assert fit_ggd(v)[0] == pytest.approx(alpha, rel=0.05)
    a, eta, lv, rv = fit_aggd(torch.randn(100_000, generator=g, dtype=torch.float64) * 0.5)
    assert (a, eta, lv, rv) == pytest.approx((2.0, 0.0, 0.25, 0.25), abs=0.03)


def test_clear_errors_for_too_few_patches_bad_shapes_and_corrupt_files(model, tmp_path):
    with pytest.raises(ValueError, match=r"fit_noref: 4 usable 32x32 patches in 1 image\(s\) \(sizes \[\(64, 64\)\]\), need at least 72"):
        fit_noref([torch.rand(3, 64, 64)])
    with pytest.raises(ValueError, match=r"images\[1\]: expected shape \(C,H,W\), got \(2, 3, 8, 8\)"):
        fit_noref([torch.rand(3, 64, 64), torch.rand(2, 3, 8, 8)])
    with pytest.raises(ValueError, match=r"img: no 32x32 patch of the image of shape \(3, 16, 16\)"):
        model.score(torch.rand(3, 16, 16))
    bad = tmp_path / NOREF_FILE
    bad.write_bytes(b"\x80\x04pickle?")
    with pytest.raises(ValueError, match=r"noref.json: not a valid hqg no-reference model"):
        NorefModel.load(bad)
    d = json.loads(model.save(tmp_path / "ok.json").read_text()); d["cov"] = d["cov"][:5]
    bad.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"expected mean \(36,\) and cov \(36,36\)"):
        NorefModel.load(bad)


def test_fit_noref_folder_saves_with_the_dataset_and_the_harness_finds_it(tmp_path, gts):
    root = tmp_path / "ds"
    shutil.copytree(FUNDUS / "hq", root / "hq"); shutil.copytree(FUNDUS / "test", root / "test")
    m = fit_noref_folder(root, cfg=NorefConfig(sharpness=0.5))
    assert (root / NOREF_FILE).is_file() and m.cfg.sharpness == 0.5 and m.n_images == 14
    found, msg = load_or_fit_noref(root / "test" / "lq")
    assert msg == f"HQ-domain NIQE model loaded from {root / NOREF_FILE}" and found.cfg.sharpness == 0.5
    r = evaluate("identity", root / "test" / "lq", tmp_path / "o", plots=False, save_images=False, diagnostics=False,
                 verbose=False)
    assert not r["has_ground_truth"] and r["no_reference"].startswith("HQ-domain NIQE model loaded from")
    assert r["mean"]["niqe_hq"] == pytest.approx(r["mean"]["niqe_hq_in"], abs=1e-9)  # identity
    assert NorefModel.load(tmp_path / "o" / NOREF_FILE).n_patches == m.n_patches  # the model used, kept with the results
    r2 = evaluate(lambda x: x.clone(), root, tmp_path / "p", plots=False, save_images=False, diagnostics=False, verbose=False)
    assert "niqe_hq" not in r2["mean"] and "no_reference" not in r2  # paired set: unchanged unless asked
