"""Tests for hqg.eval.drift: the ridge detector against exact masks, created/lost structure, planted hallucinations."""
import kornia
import pytest
import torch

from hqg.core import repo_file
from hqg.data.degrade import estimate_fov, synth_nerves, synth_vessels
from hqg.eval.drift import (DriftResult, erase_structure, fov_interior, hessian_eigenvalues, paste_vessel,
                       structure_drift, structure_vs_mask, vesselness)
from hqg.data.io import list_images, read_image
from hqg.eval.metrics import auc


def load(*parts):
    return torch.stack([read_image(p) for p in list_images(repo_file("data_samples", *parts))])


@pytest.fixture(scope="module")
def vessels():
    x, m, fov = synth_vessels(160, seed=3, return_fov=True)
    return x, m, fov


@pytest.fixture(scope="module")
def nerves():
    return synth_nerves(160, seed=3)


# ----- the detector ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,bright,split,minimum", [("vessels", False, "gt", 0.93), ("vessels", False, "lq", 0.85),
                                                       ("ccm", True, "gt", 0.97), ("ccm", True, "lq", 0.95)])
def test_detector_auc_on_exact_masks(name, bright, split, minimum):
    x, m = load(name, "test", split), load(name, "test", "masks")
    fov = estimate_fov(load(name, "test", "gt")) if name == "vessels" else None
    v = vesselness(x, bright=bright, fov=fov)
    region = None if fov is None else fov_interior(fov, 9)
    a = auc(v, m, fov=region)
    assert a.shape == (4,) and float(a.mean()) > minimum and float(a.min()) > minimum - 0.05


def test_detector_range_invariance_polarity(nerves):
    x, _ = nerves
    v = vesselness(x, bright=True)
    assert v.shape == (1, 160, 160) and v.min() >= 0 and v.max() <= 1
    torch.testing.assert_close(vesselness(0.4 * x, bright=True), v, rtol=0, atol=1e-4)   # gain invariance
    line = torch.full((1, 1, 41, 41), 0.3); line[..., 20] = 0.9
    assert vesselness(line, bright=True)[0, 0, 20, 20] > 0.5
    assert vesselness(line, bright=False)[0, 0, 20, 20].abs() < 1e-6
    assert vesselness(1 - line, bright=False)[0, 0, 20, 20] > 0.5
    torch.testing.assert_close(vesselness(line), torch.maximum(vesselness(line, bright=True),   # None: both
                                                               vesselness(line, bright=False)))
    l1, l2 = hessian_eigenvalues(line[:, :1].float(), 1.5)
    assert (l1.abs() <= l2.abs() + 1e-7).all() and l2[0, 0, 20, 20] < 0


def test_detector_batched_and_fov(vessels):
    x, _, fov = vessels
    xb = torch.stack([x, x.flip(-1)])
    vb = vesselness(xb, bright=False, fov=torch.stack([fov, fov.flip(-1)]))
    torch.testing.assert_close(vb[0], vesselness(x, bright=False, fov=fov))
    torch.testing.assert_close(vb[1], vesselness(x, bright=False, fov=fov).flip(-1), rtol=0, atol=1e-5)
    inner = fov_interior(fov[None].bool(), 9)
    assert vb[0][~inner[0]].abs().max() < 1e-6 and vb[0][inner[0]].max() > 0.5


# ----- created / lost ---------------------------------------------------------------------------------------

def test_identity_and_gain_give_zero(vessels, nerves):
    x, _, fov = vessels
    d = structure_drift(x, x, fov=fov, bright=False)
    assert isinstance(d, DriftResult) and d.created.shape == (1, 160, 160)
    # exact: with V_out = V_in every map value is clamp_min(negative, 0), and the 0.2 margin dwarfs any rounding
    assert d.created_score.item() == 0.0 and d.lost_score.item() == 0.0
    assert torch.equal(d.created, torch.zeros_like(d.created)) and torch.equal(d.lost, torch.zeros_like(d.lost))
    xn, _ = nerves
    g = structure_drift(xn, 0.6 * xn, bright=True)
    assert g.created_score < 1e-3 and g.lost_score < 1e-3


def disc_of(mask, seed, frac=0.15):
    "Structure pixels of `mask` (1,H,W) within a disc around one of them (one stretch of a vessel)."
    H, W = mask.shape[-2:]
    ys, xs = torch.nonzero(mask[0] > 0.5, as_tuple=True)
    i = int(torch.randint(len(ys), (1,), generator=torch.Generator().manual_seed(seed)))
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return (mask[0] > 0.5) & ((yy - ys[i]) ** 2 + (xx - xs[i]) ** 2 < (frac * min(H, W)) ** 2)


def scores(x, y, fov, bright):
    d = structure_drift(x, y, fov=fov, bright=bright)
    return d.created_score.item(), d.lost_score.item()


def benign_max(x, fov, bright):
    ys = [x ** 0.8, kornia.filters.gaussian_blur2d(x[None], (5, 5), (0.7, 0.7))[0],
          (x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)]
    s = [scores(x, y, fov, bright) for y in ys]
    return max(c for c, _ in s), max(l for _, l in s)


@pytest.mark.parametrize("kind", ["rgb_fundus_like", "gray_ccm_like"])
def test_planted_paste_and_erase_are_flagged(kind, vessels, nerves):
    if kind == "rgb_fundus_like": (x, m, fov), bright = vessels, False
    else: (x, m), fov, bright = nerves, None, True
    assert x.shape[0] == (3 if kind == "rgb_fundus_like" else 1)
    ident = scores(x, x, fov, bright)
    c_ben, l_ben = benign_max(x, fov, bright)
    for seed in (0, 1):
        pasted, pm = paste_vessel(x, seed=seed, bright=bright)
        c, l = scores(x, pasted, fov, bright)
        assert ident == (0.0, 0.0)                                      # exact: see test_identity_and_gain_give_zero
        assert c > 0.005 and c > 5 * c_ben and l < c / 5                 # created, far above identity and benign
        d = structure_drift(x, pasted, fov=fov, bright=bright)
        assert d.created[0][pm[0]].mean() > 5 * d.created[0][~pm[0]].mean()   # located on the pasted vessel
        erased = erase_structure(x, disc_of(m, seed))
        c, l = scores(x, erased, fov, bright)
        assert l > 0.005 and l > 5 * l_ben and c < l / 5                 # lost, far above identity and benign


def test_planted_on_real_fundus_view():
    x = read_image(list_images(repo_file("data_samples", "fundus", "test", "gt"))[0])
    fov = estimate_fov(x)
    v = vesselness(x, bright=False, fov=fov)
    assert scores(x, x, fov, False) == (0.0, 0.0)   # exact: clamp_min(0) below the margin
    c, _ = scores(x, paste_vessel(x, seed=1)[0], fov, False)
    _, l = scores(x, erase_structure(x, disc_of((v > 0.5).float(), 1)), fov, False)
    c_ben, l_ben = benign_max(x, fov, False)
    assert c > 0.01 and c > 5 * c_ben and l > 0.01 and l > 5 * l_ben


def test_structure_vs_mask_oracle_improves():
    x_lq, x_gt, m = load("vessels", "test", "lq"), load("vessels", "test", "gt"), load("vessels", "test", "masks")
    fov = estimate_fov(x_gt)
    r = structure_vs_mask(x_lq, x_gt, m, fov=fov, bright=False)
    assert set(r) == {f"{a}_{s}" for a in ("precision", "recall", "dice", "auc") for s in ("in", "out")}
    assert all(t.shape == (4,) and (0 <= t).all() and (t <= 1).all() for t in r.values())
    assert r["recall_out"].mean() > r["recall_in"].mean() + 0.05 and (r["auc_out"] > r["auc_in"]).all()
    same = structure_vs_mask(x_gt[0], x_gt[0], m[0], fov=fov[0], bright=False)
    assert same["dice_in"].ndim == 0 and same["dice_in"] == same["dice_out"] and same["precision_in"] > 0.4


def test_bad_inputs(nerves):
    x, m = nerves
    with pytest.raises(ValueError, match="x_out: expected the batch and size of x_in"):
        structure_drift(x, x[:, :100])
    with pytest.raises(ValueError, match="scales: expected one or more positive"):
        vesselness(x, scales=(0.0,))
    with pytest.raises(ValueError, match="bright: expected True, False or None"):
        vesselness(x, bright=1)
    with pytest.raises(ValueError, match="fov: expected shape"):
        structure_drift(x, x, fov=torch.ones(10, 10))
    with pytest.raises(ValueError, match="interior"):
        vesselness(x, fov=torch.zeros(160, 160))
    with pytest.raises(ValueError, match="tolerance: expected an int >= 0"):
        structure_drift(x, x, tolerance=1.5)
    with pytest.raises(ValueError, match="margin: expected a value in"):
        structure_drift(x, x, margin=-0.1)
    with pytest.raises(ValueError, match="threshold: expected a value in"):
        structure_vs_mask(x, x, m, threshold=0)
    with pytest.raises(ValueError, match="mask: no structure pixel"):
        structure_vs_mask(x, x, torch.zeros_like(m))
    with pytest.raises(ValueError, match="x: expected 1 or 3 channels"):
        vesselness(torch.rand(2, 16, 16))
    with pytest.raises(ValueError, match="width, length, contrast"):
        paste_vessel(x, contrast=2.0)
    with pytest.raises(ValueError, match="mask: expected shape"):
        erase_structure(x, m[:, :10])
