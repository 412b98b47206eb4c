"""Tests for hqg.data.degrade: seeded, recorded degradations, field of view, synthetic vessel/nerve images."""
import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hqg.data.degrade import (DEGRADATIONS, RECIPES, adjust_gamma, defocus_blur, degrade, disc_kernel, estimate_fov,
                         fov_mask, gaussian_noise, haze, illumination_field, jpeg, murray_split, poisson_noise,
                         reduce_contrast, render_capsules, replay, synth_nerves, synth_vessels,
                         uneven_illumination)

OPS = sorted(DEGRADATIONS)


def psnr(a, b):
    return (10 * torch.log10(1 / ((a - b) ** 2).mean())).item()


@pytest.fixture(scope="module")
def fundus():
    x, mask, fov = synth_vessels(64, seed=1, return_fov=True)
    return x, mask, fov


# ---------------------------------------------------------------- seeds, records, re-application

@pytest.mark.parametrize("name", OPS)
def test_same_seed_same_output_and_record_reapplies(name, fundus):
    x = fundus[0]
    y1, p1 = DEGRADATIONS[name](x, seed=3)
    y2, p2 = DEGRADATIONS[name](x, seed=3)
    assert torch.equal(y1, y2) and p1 == p2                 # exact: same seed, same process
    p_json = json.loads(json.dumps(p1))                     # plain, JSON-serialisable record
    assert p_json == p1
    y3, p3 = DEGRADATIONS[name](x, **p_json)                # re-applied from the record, no seed given
    assert torch.equal(y3, y1)                              # exact: bitwise replay on one machine
    assert p3 == p1


@pytest.mark.parametrize("name", OPS)
def test_different_seeds_differ(name, fundus):
    x = fundus[0]
    y1, p1 = DEGRADATIONS[name](x, seed=11)
    y2, p2 = DEGRADATIONS[name](x, seed=12)
    assert p1 != p2
    assert (y1 - y2).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["gaussian_noise", "uneven_illumination", "haze"])
def test_generator_and_global_rng_are_recorded(name, fundus):
    x = fundus[0]
    ya, pa = DEGRADATIONS[name](x, generator=torch.Generator().manual_seed(5))
    yb, pb = DEGRADATIONS[name](x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ya, yb) and isinstance(pa["seed"], int)   # exact: same seed, same process (and below)
    assert torch.equal(DEGRADATIONS[name](x, **pa)[0], ya)
    torch.manual_seed(123); yc, pc = DEGRADATIONS[name](x)
    torch.manual_seed(123); yd, _ = DEGRADATIONS[name](x)
    assert torch.equal(yc, yd)
    assert torch.equal(DEGRADATIONS[name](x, **pc)[0], yc)


def test_drawn_values_lie_in_their_ranges():
    x = torch.rand(1, 16, 16)
    for s in range(10):
        assert 0.2 <= adjust_gamma(x, gamma=(0.2, 0.3), seed=s)[1]["gamma"] <= 0.3
        q = jpeg(x, quality=(40, 42), seed=s)[1]["quality"]
        assert q in (40, 41, 42) and isinstance(q, int)
        p = uneven_illumination(x, seed=s)[1]
        assert 0.2 <= p["strength"] <= 0.6 and all(0.25 <= c <= 0.75 for c in p["center"])


# ---------------------------------------------------------------- shape / dtype / range grid

@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", [(1, 24, 20), (3, 24, 20), (2, 1, 24, 20), (2, 3, 24, 20)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_range_preserved(name, shape, dtype):
    x = torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    y, p = DEGRADATIONS[name](x, seed=0)
    assert y.shape == x.shape and y.dtype == dtype
    assert y.min() >= 0 and y.max() <= 1
    assert isinstance(p, dict)


@pytest.mark.parametrize("preset", sorted(RECIPES))
@pytest.mark.parametrize("shape", [(3, 32, 40), (2, 1, 32, 32)])
def test_degrade_shape_dtype_range(preset, shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    y, rec = degrade(x, preset, seed=0)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert 0 <= y.min() and y.max() <= 1
    assert rec["preset"] == preset and rec["seed"] == 0
    assert [o["op"] for o in rec["ops"]] == [name for name, _ in RECIPES[preset]]


# ---------------------------------------------------------------- known values

def test_haze_formula_by_hand():
    J = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    L = torch.full((1, 6, 5), 0.8, dtype=torch.float64)
    y, p = haze(J, t=0.7, airlight=0.9, tint=(1.0, 0.8, 0.5), illumination=L)
    A = torch.tensor([0.9, 0.72, 0.45], dtype=torch.float64).view(1, 3, 1, 1)
    assert torch.allclose(y, 0.7 * J * 0.8 + 0.3 * A, atol=1e-12)
    assert p["illumination"] == "tensor"
    g, _ = haze(J[:, :1], t=0.25, airlight=0.6, illumination=0.0)             # gray: A = airlight
    assert torch.allclose(g, 0.25 * J[:, :1] + 0.75 * 0.6, atol=1e-12)


def test_adjust_gamma_exact_and_contrast():
    x = torch.rand(3, 10, 10, dtype=torch.float64)
    torch.testing.assert_close(adjust_gamma(x, gamma=0.45)[0], x ** 0.45, rtol=0, atol=1e-12)
    y, _ = reduce_contrast(x, contrast=0.25)
    assert torch.allclose(y - y.mean((1, 2), keepdim=True), 0.25 * (x - x.mean((1, 2), keepdim=True)), atol=1e-12)


def test_illumination_field_range():
    L = illumination_field((20, 30), strength=0.35, scale=0.4, center=(0.1, 0.9),
                           batch=2, generator=torch.Generator().manual_seed(0))
    assert L.shape == (2, 1, 20, 30)
    assert torch.allclose(L.amin((1, 2, 3)), torch.full((2,), 0.65, dtype=L.dtype))
    assert torch.allclose(L.amax((1, 2, 3)), torch.ones(2, dtype=L.dtype))


def test_defocus_blur_constant_mean_and_monotone_detail_loss():
    c = torch.full((2, 3, 17, 23), 0.3)
    for r in (0.7, 1.5, 4.0):
        assert torch.allclose(defocus_blur(c, radius=r)[0], c, atol=1e-6)
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    lap = torch.tensor([[0., 1, 0], [1, -4, 1], [0, 1, 0]])[None, None]
    v = [F.conv2d(defocus_blur(x, radius=r)[0], lap)[..., 6:-6, 6:-6].var().item()
         for r in (0.0, 0.6, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)]
    assert all(a > b for a, b in zip(v, v[1:])), v
    k = disc_kernel(4.0)                                     # pillbox: flat inside, not Gaussian
    assert k.shape == (9, 9) and abs(k.sum().item() - 1) < 1e-12
    assert abs(k[4, 4] - k[4, 6]) < 1e-12 and abs(k[4, 4] - k[2, 4]) < 1e-12 and abs(k[0, 0]) < 1e-12


def test_noise_statistics():
    x = torch.full((1, 1, 128, 128), 0.4)
    for s in (0.01, 0.05):
        assert abs((gaussian_noise(x, sigma=s, seed=0)[0] - x).std().item() - s) < 0.05 * s
    y, _ = poisson_noise(x, peak=100.0, seed=0)
    assert abs((y - x).var().item() - 0.4 / 100) < 0.1 * 0.4 / 100
    assert abs((y - x).mean().item()) < 0.002
    assert torch.allclose(y * 100, (y * 100).round(), atol=1e-4)         # counts / peak


@pytest.mark.parametrize("name,key,values", [
    ("gaussian_noise", "sigma", [0.01, 0.03, 0.1]),
    ("poisson_noise", "peak", [3000.0, 300.0, 30.0]),
    ("defocus_blur", "radius", [0.7, 1.5, 3.0]),
    ("haze", "t", [0.9, 0.7, 0.4]),
    ("jpeg", "quality", [90, 50, 10]),
    ("uneven_illumination", "strength", [0.1, 0.3, 0.6]),
    ("reduce_contrast", "contrast", [0.9, 0.6, 0.3]),
    ("adjust_gamma", "gamma", [1.1, 1.5, 2.5]),
])
def test_psnr_decreases_with_strength(name, key, values, fundus):
    x = fundus[0]
    extra = dict(illumination=0.0) if name == "haze" else {}
    ps = [psnr(DEGRADATIONS[name](x, **{key: v}, **extra, seed=0)[0], x) for v in values]
    assert all(a > b for a, b in zip(ps, ps[1:])), ps


def test_jpeg_gray_and_rgb_are_8bit():
    for c in (1, 3):
        y, p = jpeg(torch.rand(c, 16, 16), quality=60)
        assert torch.allclose(y * 255, (y * 255).round(), atol=1e-4)
        assert p == dict(quality=60, subsampling="4:2:0")


# ---------------------------------------------------------------- field of view

@pytest.mark.parametrize("name", OPS)
def test_outside_fov_unchanged_by_every_degradation(name, fundus):
    x, _, fov = fundus
    out = ~fov[0].bool()
    kw = dict(sigma=0.2) if name == "gaussian_noise" else dict(t=0.3) if name == "haze" else {}
    y, _ = DEGRADATIONS[name](x, **kw, seed=0, fov=fov)
    assert torch.equal(y[:, out], x[:, out])                 # exact: copied outside the FOV (also below)
    assert y[:, out].abs().max() < 1e-6                      # dark stays dark
    assert (y[:, ~out] - x[:, ~out]).abs().max() > 1e-2      # while inside something happened
    yb, _ = DEGRADATIONS[name](torch.stack([x, x]), **kw, seed=0, fov=fov[None].expand(2, 1, -1, -1))
    assert torch.equal(yb[:, :, out], torch.stack([x, x])[:, :, out])


@pytest.mark.parametrize("preset", sorted(RECIPES))
def test_outside_fov_unchanged_by_degrade(preset, fundus):
    x, _, fov = fundus
    for f in (fov, fov[0], fov[0].bool(), "auto"):
        out = ~(estimate_fov(x) if isinstance(f, str) else fov.bool())[0]
        y, _ = degrade(x, preset, seed=4, fov=f)
        assert torch.equal(y[:, out], x[:, out])            # exact: copied outside the FOV


def test_defocus_does_not_bleed_black_border_into_fov(fundus):
    x, _, fov = fundus
    inner = fov[0].bool()
    y_fov, _ = defocus_blur(x, radius=3.0, fov=fov)
    y_plain, _ = defocus_blur(x, radius=3.0)
    edge = inner & ~(F.max_pool2d((~inner).float()[None, None], 7, 1, 3)[0, 0] == 0)   # inside, near the rim
    assert y_fov[:, edge].mean() > y_plain[:, edge].mean() + 0.02


def test_estimate_fov_synthetic_and_degraded():
    for s in (0, 5):
        x, _, fov = synth_vessels(96, seed=s, return_fov=True)
        for img in (x, degrade(x, "fundus", seed=s, fov=fov)[0]):
            est = estimate_fov(img)
            assert est.shape == (1, 96, 96) and est.dtype == torch.bool
            iou = ((est & fov.bool()).sum() / (est | fov.bool()).sum()).item()
            assert iou > 0.97, iou
    assert estimate_fov(torch.stack([x, x])).shape == (2, 1, 96, 96)


def test_estimate_fov_real_retina():
    skdata = pytest.importorskip("skimage.data")
    try:
        img = skdata.retina()
    except Exception as e:                                   # data file not available offline
        pytest.skip(f"skimage retina not available: {e}")
    x = F.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, size=(128, 128), mode="area")[0]
    est = estimate_fov(x)[0]
    assert est[64, 64] and not est[0, 0] and not est[127, 127] and not est[0, 127]
    assert 0.65 < est.float().mean().item() < 0.82              # a disc inscribed in the frame covers pi/4
    assert x[:, ~est].mean() < 0.02 and x[:, est].mean() > 0.2



# ---------------------------------------------------------------- field of view under haze and low light (real pixels)

@pytest.fixture(scope="module")
def retina_photo():
    skdata = pytest.importorskip("skimage.data")
    try:
        img = skdata.retina()
    except Exception as e:                                   # data file not available
        pytest.skip(f"skimage retina not available: {e}")
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255


def _iou(a, b):
    return ((a & b).sum() / (a | b).sum()).item()


def _hard_cases(view, ref, seeds=range(8)):
    "The robustness grid: dark and gamma 2 as they are, and per seed the fundus preset four ways."
    yield "x0.3", view * 0.3
    yield "gamma 2", view ** 2
    for s in seeds:
        yield f"haze everywhere, seed {s}", degrade(view, "fundus", seed=s)[0]
        yield f"black border kept, seed {s}", degrade(view, "fundus", seed=s, fov=ref)[0]
        yield f"x0.3 then haze, seed {s}", degrade(view * 0.3, "fundus", seed=s)[0]
        yield f"gamma 2 then haze, seed {s}", degrade(view ** 2, "fundus", seed=s)[0]


@pytest.mark.parametrize("size,views", [
    (128, [((0.5, 0.5), 1.0, 0), ((0.5, 0.5), 1.0, 40), ((0.5, 0.5), 1.0, 200)]),
    (192, [((0.5, 0.5), 1.0, 120)]),
    (96, [((0.5, 0.5), 1.0, 290)])])
def test_estimate_fov_whole_views_under_haze_and_low_light(retina_photo, size, views):
    from hqg.data.samples import make_view
    for c, scale, angle in views:
        view = make_view(retina_photo, size, c, scale, angle)
        ref = estimate_fov(view)                               # the clean view's FOV: a disc, black corners
        assert not ref[0, 0, 0] and ref[0, size // 2, size // 2] and 0.7 < ref.float().mean() < 0.85
        worst = min((_iou(estimate_fov(y), ref), name) for name, y in _hard_cases(view, ref))
        assert worst[0] >= 0.95, (size, angle, worst)


@pytest.mark.parametrize("size,views", [
    (128, [((0.5, 0.5), 0.6, 0), ((0.5, 0.5), 0.6, 30), ((0.62, 0.62), 0.4, -20),
           ((0.45, 0.22), 0.25, 30)]),                          # the last: the bright optic disc in the middle
    (192, [((0.38, 0.6), 0.35, 10)])])
def test_estimate_fov_crops_have_no_border_under_haze_and_low_light(retina_photo, size, views):
    from hqg.data.samples import make_view
    for c, scale, angle in views:
        view = make_view(retina_photo, size, c, scale, angle)
        ref = estimate_fov(view)
        assert ref.all()
        worst = min((estimate_fov(y).float().mean().item(), name) for name, y in _hard_cases(view, ref))
        assert worst[0] >= 0.99, (size, c, worst)


def _first_version_fov(x, threshold=0.1):
    "estimate_fov as it was before haze-robustness: luminance > threshold * p99, opening, convex fill."
    from hqg.core import as_batch, unbatch, convert_channels
    xb, added = as_batch(x)
    k = max(3, (min(xb.shape[-2:]) * 3 // 200) | 1)
    lum = convert_channels(xb, 1).float()
    m = (lum > threshold * torch.quantile(lum.flatten(1), 0.99, dim=1).clamp_min(1e-6)[:, None, None, None]).float()
    m = F.max_pool2d(-F.max_pool2d(-m, k, 1, k // 2), k, 1, k // 2) > 0.5
    H, W = m.shape[-2:]
    iw, ih = torch.arange(W), torch.arange(H)[:, None]
    rows = (iw >= torch.where(m, iw, W).amin(-1, keepdim=True)) & (iw <= torch.where(m, iw, -1).amax(-1, keepdim=True))
    cols = (ih >= torch.where(m, ih, H).amin(-2, keepdim=True)) & (ih <= torch.where(m, ih, -1).amax(-2, keepdim=True))
    return unbatch(rows & cols, added)


def test_estimate_fov_black_borders_give_the_first_versions_mask(retina_photo):
    "Images with a black border (the shipped samples, metric masks) keep exactly the mask they had."
    # Exact on purpose: bool masks from the same float operations on the same machine (the contract is "unchanged").
    from hqg.data.samples import make_view
    for c, scale, angle in [((0.5, 0.5), 1.0, 0), ((0.5, 0.5), 1.0, 290), ((0.3, 0.35), 0.45, 0),
                            ((0.5, 0.22), 0.4, 0), ((0.45, 0.45), 0.75, 30)]:   # whole views and partial borders
        view = make_view(retina_photo, 160, c, scale, angle)
        ref = _first_version_fov(view)
        assert not ref.all()
        for y in (view, view * 0.3, view ** 2, degrade(view, "fundus", seed=1, fov=ref)[0]):
            assert torch.equal(estimate_fov(y), _first_version_fov(y)), (c, scale, angle)
    for s in range(3):
        x, _, fov = synth_vessels(96, seed=s, return_fov=True)
        for y in (x, degrade(x, "fundus", seed=s, fov=fov)[0]):
            assert torch.equal(estimate_fov(y), _first_version_fov(y))

def test_estimate_fov_batch_is_per_image_and_matches_single_calls(retina_photo):
    from hqg.data.samples import make_view
    whole = degrade(make_view(retina_photo, 96, (0.5, 0.5), 1.0, 0), "fundus", seed=3)[0]
    crop = degrade(make_view(retina_photo, 96, (0.5, 0.5), 0.5, 0), "fundus", seed=3)[0]
    both = estimate_fov(torch.stack([whole, crop]))
    assert both.shape == (2, 1, 96, 96)
    assert torch.equal(both[0], estimate_fov(whole)) and torch.equal(both[1], estimate_fov(crop))
    assert both[1].all() and not both[0].all()


def test_estimate_fov_no_border_cases():
    g = torch.Generator().manual_seed(0)
    assert estimate_fov(torch.rand(3, 48, 64, generator=g)).all()          # noise
    assert estimate_fov(torch.zeros(3, 32, 32)).all()                      # no contrast at all
    assert estimate_fov(torch.full((3, 32, 32), 0.4)).all()
    for s in (0, 1):                                                        # dark CCM images: thin bright nerves
        x = synth_nerves(96, seed=s)[0]
        assert estimate_fov(x).all() and estimate_fov(degrade(x, "ccm", seed=s)[0]).all()


def test_estimate_fov_keeps_the_black_border_behaviour(fundus):
    x, _, fov = fundus
    est = estimate_fov(x)
    xg = x.clone(); xg[:, ~fov[0].bool()] = 0.02                         # a near-black border with an offset
    assert _iou(estimate_fov(xg), est) > 0.98
    assert not estimate_fov(x, fill=False)[0][x[1] < 0.1 * x[1].max()].all()  # no fill: dark holes stay out
    assert estimate_fov(x, kernel=1).shape == (1, 64, 64)


def test_fov_mask_forms_and_errors():
    x = torch.rand(2, 3, 8, 10)
    for m in (torch.ones(8, 10), torch.ones(1, 8, 10, dtype=torch.bool), torch.full((2, 1, 8, 10), 0.9)):
        out = fov_mask(m, x)
        assert out.dtype == torch.bool and out.ndim == 4 and out.all()
    assert not fov_mask(torch.full((8, 10), 0.4), x).any()
    with pytest.raises(ValueError, match=r"fov: expected a mask .* shape \(2, 3, 8, 10\), got \(8, 9\)"):
        fov_mask(torch.ones(8, 9), x)
    with pytest.raises(ValueError, match=r"m: expected a mask tensor, got list"):
        fov_mask([1], x, name="m")

def test_fov_and_argument_errors(fundus):
    x = fundus[0]
    with pytest.raises(ValueError, match="fov: expected a mask"):
        gaussian_noise(x, fov=torch.ones(1, 10, 10))
    with pytest.raises(ValueError, match="seed: expected an int"):
        gaussian_noise(x, seed=1.5)
    with pytest.raises(ValueError, match="sigma: expected a number or a range"):
        gaussian_noise(x, sigma=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match=r"t: expected a value in \[0, 1\]"):
        haze(x, t=-0.1)
    with pytest.raises(ValueError, match="expected 1 or 3 channels"):
        jpeg(torch.rand(2, 16, 16))
    with pytest.raises(ValueError, match="preset: expected one of"):
        degrade(x, "nope")
    with pytest.raises(ValueError, match="kernel: expected an odd size"):
        estimate_fov(x, kernel=6)


# ---------------------------------------------------------------- degrade / replay

@pytest.mark.parametrize("preset", sorted(RECIPES))
def test_degrade_replay_exact_and_seeded(preset, fundus):
    x, _, fov = fundus
    y, rec = degrade(x, preset, seed=7, fov=fov)
    rec_json = json.loads(json.dumps(rec))
    assert torch.equal(replay(x, rec_json, fov=fov), y)        # exact: bitwise replay on one machine (and below)
    assert torch.equal(replay(x, rec_json["ops"], fov=fov), y)
    assert torch.equal(degrade(x, preset, seed=7, fov=fov)[0], y)
    assert (degrade(x, preset, seed=8, fov=fov)[0] - y).abs().max() > 1e-2
    assert psnr(y, x) < 40


def test_degrade_custom_chain_and_scaled_sizes():
    x = torch.rand(3, 64, 64)
    y, rec = degrade(x, [("adjust_gamma", dict(gamma=2.0)), ("defocus_blur", dict(radius_at_256=4.0))], seed=0)
    assert rec["preset"] == "custom"
    assert rec["ops"][0] == dict(op="adjust_gamma", gamma=2.0)
    assert rec["ops"][1]["radius"] == pytest.approx(1.0, abs=1e-12)   # 4 px at 256 -> 1 px at 64
    torch.testing.assert_close(y, defocus_blur(x ** 2.0, radius=1.0)[0], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(x, [("sharpen", {})])


def test_degrade_batched_per_image_noise():
    x = torch.full((2, 1, 32, 32), 0.5)
    y, _ = degrade(x, "ccm", seed=0)
    assert (y[0] - y[1]).abs().max() > 1e-2


# ---------------------------------------------------------------- synthetic images

def test_render_capsules_mask_is_exact():
    rng = np.random.default_rng(0)
    p0, p1 = rng.uniform(-5, 45, (15, 2)), rng.uniform(-5, 45, (15, 2))
    r = rng.uniform(0.4, 4, 15)
    V, M = render_capsules(p0, p1, r, np.ones(15), (40, 37))
    yy, xx = np.mgrid[0:40, 0:37].astype(np.float64)
    want = np.zeros((40, 37), bool)
    for a, b, rad in zip(p0, p1, r):
        d = b - a
        t = np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / (d @ d), 0, 1)
        want |= np.hypot(xx - a[0] - t * d[0], yy - a[1] - t * d[1]) <= rad
    assert np.array_equal(M, want)
    assert (V[M] >= 0.5 * (1 - 0.45)).all() and V.max() <= 1


def test_murray_split():
    for alpha in (0.3, 0.7, 1.0):
        r1, r2, t1, t2 = murray_split(1.5, alpha)
        assert abs(r1 ** 3 + r2 ** 3 - 1.5 ** 3) < 1e-12 and abs(r2 / r1 - alpha) < 1e-12
        assert t2 >= t1 > 0 if alpha < 1 else abs(t1 - t2) < 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synth_vessels_values(seed):
    x, mask, fov = synth_vessels(128, seed=seed, return_fov=True)
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32
    assert mask.shape == fov.shape == (1, 128, 128)
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and set(fov.unique().tolist()) == {0.0, 1.0}
    assert 0 <= x.min() and x.max() <= 1
    m, f = mask[0].bool(), fov[0].bool()
    assert not (m & ~f).any()                                    # vessels only inside the FOV
    assert 0.05 < m.sum().item() / f.sum().item() < 0.20
    bg = f & ~m
    assert x[1][m].mean() < x[1][bg].mean() - 0.05               # darker in green ...
    assert (x[1][bg].mean() - x[1][m].mean()) > (x[0][bg].mean() - x[0][m].mean())   # ... more than in red
    assert x[:, ~f].abs().max() < 1e-6                           # black outside the FOV
    assert x[0][f].mean() > x[1][f].mean() > x[2][f].mean()      # orange-red fundus


def test_synth_vessels_determinism_sizes_channels():
    a = synth_vessels(64, seed=9)
    b = synth_vessels(64, seed=9)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])   # exact: same seed, same process
    assert not torch.equal(a[1], synth_vessels(64, seed=10)[1])
    g, gm = synth_vessels(64, seed=9, channels=1)
    assert g.shape == (1, 64, 64) and torch.equal(g, a[0][1:2]) and torch.equal(gm, a[1])
    x, m = synth_vessels((48, 80), seed=0)
    assert x.shape == (3, 48, 80) and m.shape == (1, 48, 80)
    with pytest.raises(ValueError, match="size: expected"):
        synth_vessels((64,))


def test_synth_vessels_fast():
    synth_vessels(256, seed=0)
    best = min(_timed(lambda: synth_vessels(256, seed=1)) for _ in range(3))
    assert best < 0.5, best


def _timed(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t


@pytest.mark.parametrize("seed", [0, 1, 4, 7])
def test_synth_nerves_values(seed):
    x, mask, info = synth_nerves(128, seed=seed, return_info=True)
    assert x.shape == mask.shape == (1, 128, 128) and x.dtype == torch.float32
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    m = mask[0].bool()
    assert 0.02 < m.float().mean().item() < 0.25
    assert x[0][m].mean() > x[0][~m].mean() + 0.25                 # bright nerves on a dark background
    assert x[0][~m].mean() < 0.25
    assert info["n_fibres"] >= 4 and info["n_branches"] >= 1
    gy, gx = np.gradient(mask[0].double().numpy())                 # structure tensor: fibres share a direction
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    along = (math.degrees(0.5 * math.atan2(2 * jxy, jxx - jyy)) + 90) % 180
    assert abs((along - info["orientation_deg"] + 90) % 180 - 90) < 20
    coherence = math.hypot(jxx - jyy, 2 * jxy) / (jxx + jyy)
    assert coherence > 0.25


def test_synth_nerves_determinism_and_speed():
    a, b = synth_nerves(64, seed=2), synth_nerves(64, seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])   # exact: same seed, same process
    assert not torch.equal(a[1], synth_nerves(64, seed=3)[1])
    assert synth_nerves((40, 72), channels=3)[0].shape == (3, 40, 72)
    synth_nerves(256, seed=0)
    assert min(_timed(lambda: synth_nerves(256, seed=1)) for _ in range(3)) < 0.5
