"""Tests for hqg.eval.metrics: independent computations (scikit-image, scipy, pairwise AUC), masks, gray/RGB, batches."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hqg.eval.metrics import (auc, average_metrics, background_band, ccm_snr, dice, evaluate_pair,
                         illumination_uniformity, iou, laplacian_bands, psnr, ssim, ssim_map,
                         structure_preservation)

skm = pytest.importorskip("skimage.metrics")


def rand_pair(b=3, c=1, h=48, w=56, noise=0.1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(b, c, h, w, generator=g, dtype=torch.float64)
    x = (ref + noise * torch.randn(ref.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x.to(dtype), ref.to(dtype)


def texture(b=2, c=1, n=64, sigma=1.0, seed=0):
    "Smooth random texture in [0.2, 0.8]."
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(b, c, n + 12, n + 12, generator=g)
    r = torch.arange(-6, 7, dtype=torch.float32)
    k = torch.exp(-r ** 2 / (2 * sigma ** 2)); k = k / k.sum()
    t = F.conv2d(F.conv2d(t.reshape(-1, 1, n + 12, n + 12), k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    t = t.reshape(b, c, n, n)
    lo, hi = t.amin((2, 3), keepdim=True), t.amax((2, 3), keepdim=True)
    return 0.2 + 0.6 * (t - lo) / (hi - lo)


def gblur(x, sigma):
    r = torch.arange(-int(3 * sigma + 1), int(3 * sigma + 1) + 1, dtype=x.dtype)
    k = torch.exp(-r ** 2 / (2 * sigma ** 2)); k = k / k.sum()
    B, C, H, W = x.shape; p = len(r) // 2
    y = F.pad(x.reshape(B * C, 1, H, W), (p, p, p, p), mode="reflect")
    return F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1)).reshape(B, C, H, W)


def sk_ssim(x, ref, **kw):
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0) | kw
    return torch.tensor([skm.structural_similarity(x[i].double().numpy(), ref[i].double().numpy(), **kw)
                         for i in range(x.shape[0])], dtype=torch.float64)


# --- PSNR and SSIM against scikit-image -----------------------------------------------------------------

@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_psnr_matches_skimage(c, dtype):
    x, ref = rand_pair(c=c, dtype=dtype)
    want = torch.tensor([skm.peak_signal_noise_ratio(ref[i].double().numpy(), x[i].double().numpy(), data_range=1.0)
                         for i in range(3)])
    got = psnr(x, ref)
    assert got.shape == (3,) and got.dtype == dtype
    assert (got.double() - want).abs().max() < 1e-4                          # dB; measured ~1e-6 in float32


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_ssim_valid_matches_skimage(c, dtype, tol):
    x, ref = rand_pair(c=c, dtype=dtype)
    assert (ssim(x, ref).double() - sk_ssim(x, ref)).abs().max() < tol


def test_ssim_other_window_and_data_range_match_skimage():
    x, ref = rand_pair(c=3, noise=0.2, seed=1)
    # skimage: sigma 1.0 and truncate 3.5 give a 9-tap window
    assert (ssim(x, ref, window=9, sigma=1.0) - sk_ssim(x, ref, sigma=1.0)).abs().max() < 1e-12
    got = ssim(x * 255, ref * 255, max_val=255.0)
    assert (got - sk_ssim(x * 255, ref * 255, data_range=255.0)).abs().max() < 1e-10


def test_ssim_same_border_equals_skimage_in_interior_only():
    x, ref = rand_pair(c=1, dtype=torch.float32)
    m = ssim_map(x, ref).double()
    for i in range(3):
        _, full = skm.structural_similarity(x[i].double().numpy(), ref[i].double().numpy(), gaussian_weights=True,
                                            sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0,
                                            full=True)
        diff = (m[i] - torch.from_numpy(full)).abs()
        assert diff[:, 5:-5, 5:-5].max() < 1e-6                              # interior: the same map
        assert diff.max() > 1e-3                                              # borders: reflect vs renormalised
    d = (ssim(x, ref, border="same").double() - sk_ssim(x, ref)).abs().max()
    assert 1e-5 < d < 5e-3                                                    # the documented tolerance


def test_ssim_map_and_identity():
    x, ref = rand_pair(c=3, dtype=torch.float32)
    assert ssim_map(x, ref).shape == x.shape
    assert torch.allclose(ssim(ref, ref), torch.ones(3), atol=1e-6)
    assert torch.allclose(ssim(ref, ref, border="same"), torch.ones(3), atol=1e-6)


def test_ssim_gradient_is_finite():
    x, ref = rand_pair(b=1, c=1, h=24, w=24, dtype=torch.float64)
    x.requires_grad_(True)
    ssim(x, ref).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --- masks: a rectangle equals the crop; nothing outside the mask matters --------------------------------

def test_rectangle_mask_equals_crop():
    x, ref = rand_pair(b=2, c=3, h=64, w=64, dtype=torch.float32)
    box = torch.zeros(64, 64, dtype=torch.bool); box[8:56, 16:48] = True       # offsets: multiples of 8
    crop = lambda t: t[..., 8:56, 16:48]
    assert torch.allclose(psnr(x, ref, mask=box), psnr(crop(x), crop(ref)), atol=1e-4)
    for border in ("valid", "same"):
        assert torch.allclose(ssim(x, ref, mask=box, border=border), ssim(crop(x), crop(ref), border=border),
                              atol=1e-6)
    assert torch.allclose(structure_preservation(ref, x, mask=box), structure_preservation(crop(ref), crop(x)),
                          atol=1e-5)
    assert torch.allclose(illumination_uniformity(x, mask=box, patch=8), illumination_uniformity(crop(x), patch=8),
                          atol=1e-6)


def test_pixels_outside_the_mask_do_not_matter():
    x, ref = rand_pair(b=2, c=1, h=64, w=64, dtype=torch.float32)
    yy, xx = torch.meshgrid(torch.arange(64.), torch.arange(64.), indexing="ij")
    fov = ((yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 28 ** 2)[None, None]      # a disc, like a fundus FOV
    x2 = torch.where(fov, x, torch.rand(x.shape)); ref2 = torch.where(fov, ref, 0.0)
    for f in (psnr, ssim, lambda a, b, mask: ssim(a, b, mask=mask, border="same"),
              lambda a, b, mask: structure_preservation(b, a, mask=mask)):
        assert torch.allclose(f(x, ref, mask=fov), f(x2, ref2, mask=fov), atol=1e-5)
    assert torch.allclose(illumination_uniformity(x, mask=fov), illumination_uniformity(x2, mask=fov), atol=1e-6)


def test_mask_forms_and_broadcast():
    x, ref = rand_pair(b=2, c=1, h=32, w=32, dtype=torch.float32)
    m = torch.zeros(32, 32); m[:, :20] = 1
    want = psnr(x, ref, mask=m > 0.5)
    for form in (m, m[None], m[None, None], m[None, None].expand(2, 1, 32, 32), (m * 255).to(torch.uint8)):
        assert torch.allclose(psnr(x, ref, mask=form), want)
    per_image = torch.stack([torch.zeros(32, 32), m])[:, None].bool()
    per_image[0, 0, :5] = True
    got = psnr(x, ref, mask=per_image)
    assert torch.allclose(got[0], psnr(x[:1, :, :5], ref[:1, :, :5])[0], atol=1e-5)
    assert torch.allclose(got[1], want[1])


@pytest.mark.parametrize("bad,msg", [
    (torch.ones(3, 1, 32, 32), "mask: expected shape (2,1,32,32)"),
    (torch.ones(2, 32, 32), "mask: expected shape (2,1,32,32)"),
    (torch.ones(2, 1, 16, 32), "got (2, 1, 16, 32)"),
    (torch.zeros(32, 32), "no pixel inside the mask for image(s) [0, 1]"),
])
def test_bad_masks(bad, msg):
    x, ref = rand_pair(b=2, c=1, h=32, w=32, dtype=torch.float32)
    for f in (psnr, ssim):
        with pytest.raises(ValueError, match=None) as e: f(x, ref, mask=bad)
        assert msg in str(e.value)


def test_bad_images():
    x, ref = rand_pair(b=2, c=1, h=32, w=32, dtype=torch.float32)
    cases = [(lambda: psnr(x, ref[..., :16]), "ref: expected the shape of x (2, 1, 32, 32), got (2, 1, 32, 16)"),
             (lambda: ssim(x, ref.expand(2, 3, 32, 32)), "ref: expected the shape of x"),
             (lambda: ssim(torch.rand(2, 2, 32, 32), torch.rand(2, 2, 32, 32)), "x: expected 1 or 3 channels"),
             (lambda: psnr(x[0, 0], ref[0, 0]), "x: expected shape (C,H,W) or (B,C,H,W), got (32, 32)"),
             (lambda: ssim(x, ref, window=10), "window: expected an odd size"),
             (lambda: ssim(x, ref, sigma=0), "sigma: expected a positive"),
             (lambda: structure_preservation(x, ref, levels=0), "levels: expected an integer >= 1"),
             (lambda: structure_preservation(x, ref[:1]), "x_out: expected the batch and spatial size"),
             (lambda: illumination_uniformity(x, min_coverage=0), "min_coverage")]
    for f, msg in cases:
        with pytest.raises(ValueError) as e: f()
        assert msg in str(e.value), (msg, str(e.value))
    with pytest.raises(TypeError, match="mask: expected a torch.Tensor"): psnr(x, ref, mask=np.ones((32, 32)))


# --- batches: batched == per image; single images give 0-d ------------------------------------------------

def test_batched_equals_per_image():
    x, ref = rand_pair(b=3, c=3, h=40, w=40, dtype=torch.float32)
    nerves = torch.rand(3, 1, 40, 40) > 0.9
    fns = {"psnr": lambda a, b, i: psnr(a, b), "ssim": lambda a, b, i: ssim(a, b),
           "structure": lambda a, b, i: structure_preservation(b, a),
           "uniformity": lambda a, b, i: illumination_uniformity(a),
           "snr": lambda a, b, i: ccm_snr(a, nerves if i is None else nerves[i]),
           "dice": lambda a, b, i: dice(a[..., :1, :, :], (nerves if i is None else nerves[i]).float()),
           "auc": lambda a, b, i: auc(a[..., :1, :, :], nerves if i is None else nerves[i])}
    for name, f in fns.items():
        batched = f(x, ref, None)
        assert batched.shape == (3,), name
        single = torch.stack([f(x[i], ref[i], i) for i in range(3)])
        assert single.shape == (3,), name                                     # (C,H,W) in: 0-d out
        assert torch.allclose(batched, single, atol=1e-6, equal_nan=True), name


# --- structure preservation ------------------------------------------------------------------------------

def test_structure_identity_gain_offset_invariance():
    y = texture()
    assert torch.allclose(structure_preservation(y, y), torch.ones(2), atol=1e-6)
    for gain, offset in [(1.3, 0.0), (0.5, 0.1), (1.0, -0.15), (1.2, 0.05)]:
        out = 0.5 + gain * (y - 0.5) + offset
        assert out.min() >= 0 and out.max() <= 1
        assert torch.allclose(structure_preservation(y, out), torch.ones(2), atol=1e-4)
        assert torch.allclose(structure_preservation(out, y), torch.ones(2), atol=1e-4)


def test_structure_decreases_with_blur_and_noise():
    y = texture(seed=1)
    blur = [structure_preservation(y, gblur(y, s)).mean().item() for s in (0.5, 1.0, 2.0)]
    assert 1 > blur[0] > blur[1] > blur[2]
    g = torch.Generator().manual_seed(2)
    n = torch.randn(y.shape, generator=g)
    noise = [structure_preservation(y, (y + s * n).clamp(0, 1)).mean().item() for s in (0.01, 0.03, 0.1)]
    assert 1 > noise[0] > noise[1] > noise[2]
    other = structure_preservation(y, texture(seed=7, n=64))
    assert (other < 0.2).all()
    flat = structure_preservation(y, torch.full_like(y, 0.4))                 # a flat output is not rewarded
    assert (flat < 0.15).all()


def test_structure_gray_rgb_and_channels_may_differ():
    y = texture(c=3, seed=3)
    lum = (0.299 * y[:, :1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:])
    out = gblur(y, 1.0)
    assert torch.allclose(structure_preservation(y, out), structure_preservation(lum, out), atol=1e-6)


def test_laplacian_bands_sizes_and_constant():
    x = torch.full((1, 1, 37, 50), 0.3)
    bands = laplacian_bands(x, 3)
    assert [tuple(b.shape[-2:]) for b, _ in bands] == [(37, 50), (19, 25), (10, 13)]
    assert all(b.abs().max() < 1e-6 and v.all() for b, v in bands)
    m = torch.zeros(1, 1, 37, 50, dtype=torch.bool); m[..., 4:30, 8:40] = True
    bands = laplacian_bands(torch.rand(1, 1, 37, 50), 3, m)
    assert all((b[~v].abs() < 1e-6).all() and not v[..., 0, 0].any() for b, v in bands)


# --- illumination uniformity -----------------------------------------------------------------------------

def test_uniformity_flat_and_gradient():
    ramp = torch.linspace(0, 1, 64).expand(1, 1, 64, 64)
    assert torch.allclose(illumination_uniformity(torch.full((2, 3, 64, 64), 0.37)), torch.ones(2), atol=1e-6)
    u = [illumination_uniformity(0.5 + s * (ramp - 0.5)).item() for s in (0.1, 0.3, 0.6, 0.9)]
    assert u == sorted(u, reverse=True) and u[0] < 1 and u[-1] < 0.6
    # independent value with numpy: 4x4 patches of 16 px
    img = (0.5 + 0.6 * (ramp - 0.5)).numpy()[0, 0]
    means = img.reshape(4, 16, 4, 16).mean((1, 3))
    assert abs(illumination_uniformity(torch.from_numpy(img)[None], patch=16).item()
               - (1 - means.std() / means.mean())) < 1e-6


def test_uniformity_coverage_rule():
    x = torch.rand(1, 1, 32, 32)
    m = torch.zeros(32, 32, dtype=torch.bool); m[:, :12] = True                 # patch column 1 is 50 % inside
    got = illumination_uniformity(x, mask=m, patch=8)
    l = x[0, 0].numpy(); mm = m.numpy()
    vals = [l[i:i + 8, j:j + 8][mm[i:i + 8, j:j + 8]].mean() for i in range(0, 32, 8) for j in (0, 8)]
    vals = np.array(vals)
    assert abs(got.item() - (1 - vals.std() / vals.mean())) < 1e-5
    assert abs(illumination_uniformity(x, mask=m, patch=8, min_coverage=0.75).item()
               - illumination_uniformity(x[..., :8], patch=8).item()) < 1e-6


# --- CCM SNR ---------------------------------------------------------------------------------------------

def test_background_band_matches_distance_transform():
    ndi = pytest.importorskip("scipy.ndimage")
    g = torch.Generator().manual_seed(4)
    nerves = torch.rand(2, 1, 40, 40, generator=g) > 0.985
    d = np.stack([ndi.distance_transform_edt(~n[0].numpy()) for n in nerves])[:, None]
    for band in [(2, 6), (0, 3), (1.5, 4.5)]:
        want = (d > band[0]) & (d <= band[1])
        assert (background_band(nerves, band).numpy() == want).all(), band


def test_ccm_snr_known_value_and_independent_computation():
    img = torch.full((1, 1, 32, 32), 0.1); img[..., ::2, ::2] = 0.3; img[..., 1::2, 1::2] = 0.3
    nerve = torch.zeros(1, 1, 32, 32, dtype=torch.bool); nerve[..., 15:17, :] = True
    img[nerve] = 0.8
    assert abs(ccm_snr(img, nerve).item() - 10 * math.log10(64)) < 1e-4
    assert abs(ccm_snr(img, nerve, db=False).item() - 64) < 1e-3
    ndi = pytest.importorskip("scipy.ndimage")
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 1, 48, 48, generator=g) * 0.3
    nerves = torch.zeros(2, 1, 48, 48, dtype=torch.bool); nerves[0, 0, 20:23, 5:40] = True; nerves[1, 0, :, 30] = True
    x[nerves] += 0.5
    for i in range(2):
        a = x[i, 0].double().numpy(); n = nerves[i, 0].numpy()
        d = ndi.distance_transform_edt(~n); bg = a[(d > 2) & (d <= 6)]
        want = 10 * np.log10(a[n].max() ** 2 / bg.var())
        assert abs(ccm_snr(x[i], nerves[i]).item() - want) < 1e-4


def test_ccm_snr_nan_when_undefined():
    x = torch.rand(2, 1, 16, 16)
    m = torch.zeros(2, 1, 16, 16, dtype=torch.bool); m[1, 0, 8, 8] = True
    got = ccm_snr(x, m)
    assert math.isnan(got[0].item()) and math.isfinite(got[1].item())
    full = torch.ones(1, 1, 16, 16, dtype=torch.bool)                         # no background left
    assert math.isnan(ccm_snr(x[:1], full).item())


# --- Dice, IoU, AUC --------------------------------------------------------------------------------------

def test_dice_iou_against_numpy():
    g = torch.Generator().manual_seed(6)
    p = torch.rand(4, 2, 20, 20, generator=g); t = torch.rand(4, 2, 20, 20, generator=g) > 0.6
    d, j = dice(p, t, threshold=0.7), iou(p, t, threshold=0.7)
    P, T = (p > 0.7).numpy(), t.numpy()
    for i in range(4):
        dd = [2 * (P[i, k] & T[i, k]).sum() / (P[i, k].sum() + T[i, k].sum()) for k in range(2)]
        jj = [(P[i, k] & T[i, k]).sum() / (P[i, k] | T[i, k]).sum() for k in range(2)]
        assert abs(d[i].item() - np.mean(dd)) < 1e-6 and abs(j[i].item() - np.mean(jj)) < 1e-6
    d1, j1 = dice(p[:, :1], t[:, :1]), iou(p[:, :1], t[:, :1])
    assert torch.allclose(j1, d1 / (2 - d1), atol=1e-6)                     # J = D / (2 - D) per class
    assert dice(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)).item() == pytest.approx(1.0, abs=1e-6)
    assert ((iou(t.float(), t) - 1).abs() < 1e-6).all() and ((dice(t, t) - 1).abs() < 1e-6).all()   # bool prediction


def auc_pairwise(s, t):
    pos, neg = s[t], s[~t]
    d = pos[:, None] - neg[None]
    return ((d > 0).double() + 0.5 * (d == 0).double()).mean().item()


def test_auc_against_pairwise_with_ties():
    g = torch.Generator().manual_seed(7)
    s = (torch.rand(3, 1, 16, 16, generator=g) * 8).round() / 8               # heavy ties
    t = torch.rand(3, 1, 16, 16, generator=g) < 0.25
    got = auc(s, t)
    want = [auc_pairwise(s[i].flatten(), t[i].flatten()) for i in range(3)]
    assert np.allclose(got.numpy(), want, atol=1e-6)
    assert abs(auc(s, t, per_image=False).item() - auc_pairwise(s.flatten(), t.flatten())) < 1e-6
    assert torch.allclose(auc(torch.logit(s.clamp(0.01, 0.99)), t), auc(s.clamp(0.01, 0.99), t))  # rank-based


def test_auc_hand_cases():
    t = torch.tensor([0, 0, 1, 1], dtype=torch.bool).view(1, 1, 2, 2)
    close = lambda v: pytest.approx(v, abs=1e-6)
    assert auc(torch.tensor([0.1, 0.2, 0.3, 0.4]).view(1, 1, 2, 2), t).item() == close(1.0)
    assert auc(torch.tensor([0.4, 0.3, 0.2, 0.1]).view(1, 1, 2, 2), t).item() == close(0.0)
    assert auc(torch.tensor([0.1, 0.3, 0.3, 0.4]).view(1, 1, 2, 2), t).item() == close(0.875)  # one tie: 3.5/4
    assert auc(torch.full((1, 1, 2, 2), 0.5), t).item() == close(0.5)
    assert auc(torch.tensor([1, 0, 1, 1]).view(1, 1, 2, 2).bool(), t).item() == close(0.75)     # bool scores


def test_auc_fov_and_errors():
    s, t = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8) > 0.5
    fov = torch.zeros(8, 8, dtype=torch.bool); fov[2:6] = True
    assert torch.allclose(auc(s, t, fov=fov), auc(s[..., 2:6, :], t[..., 2:6, :]))
    with pytest.raises(ValueError, match="mask: expected the shape of scores"): auc(s, t[..., :4])
    with pytest.raises(ValueError, match="fov: expected shape"): auc(s, t, fov=torch.ones(4, 4))


# --- the harness -----------------------------------------------------------------------------------------

def test_evaluate_pair_keys_and_values():
    x_in, ref = rand_pair(b=2, c=3, h=48, w=48, noise=0.05, dtype=torch.float32)
    x_out = (0.5 * x_in + 0.5 * ref)
    fov = torch.ones(2, 1, 48, 48, dtype=torch.bool); fov[..., :4, :] = False
    nerves = torch.zeros(2, 1, 48, 48, dtype=torch.bool); nerves[..., 24, 8:40] = True
    r = evaluate_pair(x_in, x_out, ref=ref, mask=nerves, fov=fov)
    assert set(r) == {"psnr", "ssim", "structure", "uniformity", "snr"}
    assert all(isinstance(v, list) and len(v) == 2 and all(type(f) is float for f in v) for v in r.values())
    assert np.allclose(r["psnr"], psnr(x_out, ref, mask=fov).tolist())
    assert np.allclose(r["ssim"], ssim(x_out, ref, mask=fov).tolist())
    assert np.allclose(r["structure"], structure_preservation(x_in, x_out, mask=fov).tolist())
    assert np.allclose(r["uniformity"], illumination_uniformity(x_out, mask=fov).tolist())
    assert np.allclose(r["snr"], ccm_snr(x_out, nerves, fov=fov).tolist())
    r0 = evaluate_pair(x_in[0], x_out[0])                                     # no reference: reference-free only
    assert set(r0) == {"structure", "uniformity"} and len(r0["structure"]) == 1
    ri = evaluate_pair(x_in, x_out, ref=ref, include_input=True)
    assert np.allclose(ri["psnr_in"], psnr(x_in, ref).tolist()) and "uniformity_in" in ri


def test_average_metrics():
    cols = {"psnr": [20.0, 30.0, math.inf], "snr": [math.nan, 4.0, 6.0], "none": [math.nan]}
    avg = average_metrics(cols)
    assert avg["psnr"] == math.inf and avg["snr"] == pytest.approx(5.0, abs=1e-12) and math.isnan(avg["none"])
    rows = [{"psnr": 20.0, "snr": math.nan}, {"psnr": 30.0, "snr": 4.0}]
    assert average_metrics(rows) == pytest.approx({"psnr": 25.0, "snr": 4.0}, abs=1e-12)
