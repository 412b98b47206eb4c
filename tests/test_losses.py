"""Tests for hqg.model.losses: value checks for every acceptance item (tiny tensors, CPU, seconds)."""
import math
import warnings

import numpy as np
import pytest
import pywt
import torch
import torch.nn as nn
import torch.nn.functional as F
import kornia

from hqg.model.losses import (GAN_KINDS, TERM_NAMES, DiceLoss, FeatureLoss, GANLossD, GANLossG, HQGLoss,
                        IlluminationLoss, MultiEncoderFeatureLoss, R1Penalty, SegLoss, StructureLoss,
                        WaveletContentLoss, dice_loss, feature_loss, frozen_params, gan_loss_d, gan_loss_g,
                        illumination_loss, instance_normalize, load_feature_encoder,
                        multi_encoder_feature_loss, r1_penalty, seg_loss, structure_loss,
                        wavelet_content_loss)


def smooth_image(b=2, c=1, size=64, seed=0, dtype=torch.float32):
    "Smooth random texture with values in [0.2, 0.8]."
    g = torch.Generator().manual_seed(seed)
    t = kornia.filters.gaussian_blur2d(torch.rand(b, c, size, size, generator=g), (7, 7), (1.5, 1.5))
    lo, hi = t.amin((2, 3), keepdim=True), t.amax((2, 3), keepdim=True)
    return (0.2 + 0.6 * (t - lo) / (hi - lo)).to(dtype)


def contrast_gain(x, g=1.3):
    out = 0.5 + g * (x - 0.5)
    assert out.min() >= 0 and out.max() <= 1, "test image must not clip under the gain"
    return out


def blur(x, sigma):
    return kornia.filters.gaussian_blur2d(x, (9, 9), (sigma, sigma))


class TinyEncoder(nn.Module):
    def __init__(self, c=1, width=4):
        super().__init__()
        self.a = nn.Conv2d(c, width, 3, padding=1)
        self.b = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)

    def forward(self, x):
        f1 = F.leaky_relu(self.a(x), 0.2)
        f2 = F.leaky_relu(self.b(f1), 0.2)
        return [f1, f2, f2.mean((2, 3))]


# ---------------------------------------------------------------- adversarial + R1

@pytest.mark.parametrize("kind,d_val,g_val", [
    ("nonsat", math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(1.0))),
    ("lsgan", (2.0 - 1) ** 2 + (-1.0) ** 2, (-1.0 - 1) ** 2),
    ("hinge", 0.0 + 0.0, 1.0),
])
def test_gan_losses_known_values(kind, d_val, g_val):
    real, fake = torch.full((3, 1, 2, 2), 2.0), torch.full((3, 1, 2, 2), -1.0)
    assert gan_loss_d(real, fake, kind=kind).item() == pytest.approx(d_val, abs=1e-6)
    assert gan_loss_g(fake, kind=kind).item() == pytest.approx(g_val, abs=1e-6)
    assert GANLossD(kind)(real, fake).item() == pytest.approx(d_val, abs=1e-6)
    assert GANLossG(kind)(fake).item() == pytest.approx(g_val, abs=1e-6)


def test_gan_loss_multiscale_and_errors():
    maps = [torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 2, 2)]
    assert gan_loss_g(maps, kind="lsgan").item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="kind: expected one of"):
        gan_loss_d(torch.zeros(2), torch.zeros(2), kind="wgan")
    with pytest.raises(ValueError, match="kind: expected one of"):
        GANLossG("bce")
    with pytest.raises(ValueError, match="as many maps"):
        gan_loss_d(maps, maps[:1])


def test_r1_matches_analytic_gradient():
    torch.manual_seed(1)
    x = torch.rand(3, 2, 5, 5, requires_grad=True)
    w = torch.rand(1, 2, 5, 5, requires_grad=True)        # D(x) = sum(w * x^2) per image
    logits = (w * x ** 2).flatten(1).sum(1)
    r1 = r1_penalty(logits, x)
    expected = (2 * w.detach() * x.detach()).pow(2).flatten(1).sum(1).mean()
    assert r1.item() == pytest.approx(expected.item(), rel=1e-5)
    # independent autograd computation, per image
    (g,) = torch.autograd.grad(logits.sum(), x, retain_graph=True)
    assert r1.item() == pytest.approx(g.pow(2).flatten(1).sum(1).mean().item(), rel=1e-6)
    # create_graph=True: the penalty trains D (R1 = mean_b sum 4 w^2 x^2, so d R1 / d w = mean_b 8 w x^2)
    r1.backward()
    want = (8 * w.detach() * x.detach() ** 2).mean(0)
    assert torch.allclose(w.grad[0], want, rtol=1e-4, atol=1e-6)
    assert R1Penalty()((w * x ** 2).flatten(1).sum(1), x).item() == pytest.approx(r1.item(), rel=1e-6)


def test_r1_errors():
    with pytest.raises(ValueError, match="requires_grad=True"):
        r1_penalty(torch.zeros(2), torch.rand(2, 1, 4, 4))
    x = torch.rand(2, 1, 4, 4, requires_grad=True)
    with pytest.raises(ValueError, match="no autograd graph"):
        r1_penalty(torch.zeros(2), x)


# ---------------------------------------------------------------- wavelet content loss

def test_wavelet_zero_for_identical_and_gain_invariant():
    y = smooth_image()
    assert abs(wavelet_content_loss(y, y).item()) < 1e-6
    x_enh = contrast_gain(y)
    assert wavelet_content_loss(y, x_enh).item() < 1e-6
    assert wavelet_content_loss(y, x_enh, ll_weight=0.5).item() < 1e-6
    # off: the gain is punished (|g - 1| * mean |d| of y's details)
    off = wavelet_content_loss(y, x_enh, normalize=False).item()
    assert off > 1e-2
    # gain on the *other* side too, and a gain of y applied to a non-identical pair leaves the value unchanged
    x_b = blur(y, 1.0)
    base = wavelet_content_loss(y, x_b).item()
    assert wavelet_content_loss(y, contrast_gain(x_b)).item() == pytest.approx(base, abs=1e-6)
    # measured difference 6.6e-3: a margin well below it
    assert abs(wavelet_content_loss(y, contrast_gain(x_b), normalize=False).item()
               - wavelet_content_loss(y, x_b, normalize=False).item()) > 1e-3


def test_wavelet_grows_with_blur():
    y = smooth_image(c=3, seed=4)
    vals = [wavelet_content_loss(y, blur(y, s)).item() for s in (0.5, 1.0, 2.0)]
    assert 1e-3 < vals[0] < vals[1] < vals[2]
    vals_off = [wavelet_content_loss(y, blur(y, s), normalize=False).item() for s in (0.5, 1.0, 2.0)]
    assert vals_off[0] < vals_off[1] < vals_off[2]


def test_wavelet_unnormalised_matches_pywt_oracle():
    y, x = smooth_image(b=1, size=32, seed=1, dtype=torch.float64), smooth_image(b=1, size=32, seed=2, dtype=torch.float64)
    cy = pywt.wavedec2(y[0, 0].numpy(), "haar", level=2, mode="periodization")
    cx = pywt.wavedec2(x[0, 0].numpy(), "haar", level=2, mode="periodization")
    # cy = [cA2, (cH2, cV2, cD2), (cH1, cV1, cD1)]; level weights finest first: (0.7, 0.3); HH only for level check
    per_level = {j: np.mean([np.abs(a - b).mean() for a, b in zip(cy[-j], cx[-j])]) for j in (1, 2)}
    want = 0.7 * per_level[1] + 0.3 * per_level[2] + 0.2 * np.abs(cy[0] - cx[0]).mean()
    got = wavelet_content_loss(y, x, levels=2, level_weights=(0.7, 0.3), ll_weight=0.2, normalize=False)
    assert got.item() == pytest.approx(want, rel=1e-9)
    hh = wavelet_content_loss(y, x, levels=1, bands=("hh",), normalize=False)
    c1y, c1x = pywt.dwt2(y[0, 0].numpy(), "haar", mode="periodization"), pywt.dwt2(x[0, 0].numpy(), "haar", mode="periodization")
    assert hh.item() == pytest.approx(np.abs(c1y[1][2] - c1x[1][2]).mean(), rel=1e-9)


def test_wavelet_differentiable_and_gradcheck():
    y = smooth_image(b=1, size=32)
    x_enh = blur(y, 1.0).requires_grad_(True)
    wavelet_content_loss(y, x_enh).backward()
    assert torch.isfinite(x_enh.grad).all() and x_enh.grad.abs().sum() > 0
    y64 = smooth_image(b=1, size=8, seed=3, dtype=torch.float64)
    x64 = (y64 + 0.05 * torch.randn(1, 1, 8, 8, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: wavelet_content_loss(y64, t, levels=2, ll_weight=0.3), (x64,))


def test_wavelet_module_agrees_and_errors():
    y = smooth_image(c=3, size=32, seed=5)
    x_enh = blur(y, 1.0)
    kw = dict(levels=2, bands=("lh", "hh"), level_weights=(1.0, 0.5), ll_weight=0.1)
    assert WaveletContentLoss(**kw)(y, x_enh).item() == pytest.approx(wavelet_content_loss(y, x_enh, **kw).item())
    assert wavelet_content_loss(y[..., :29, :31], x_enh[..., :29, :31]).ndim == 0     # odd sizes padded
    with pytest.raises(ValueError, match=r"equal shapes, got \(2, 3, 32, 32\) and \(2, 1, 32, 32\)"):
        wavelet_content_loss(y, y[:, :1])
    with pytest.raises(ValueError, match="expected 1 or 3 channels"):
        wavelet_content_loss(torch.rand(1, 2, 16, 16), torch.rand(1, 2, 16, 16))
    with pytest.raises(ValueError, match="bands: expected"):
        wavelet_content_loss(y, y, bands=("ll",))
    with pytest.raises(ValueError, match="level_weights: expected 3 weights"):
        wavelet_content_loss(y, y, level_weights=(1.0,))
    with pytest.raises(ValueError, match=r"need H and W >= 8"):
        wavelet_content_loss(y[..., :6, :6], y[..., :6, :6])


# ---------------------------------------------------------------- feature losses

def test_feature_loss_known_values():
    a, b = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    flat = lambda t: t.flatten(1)                       # (B, D) code = the pixels
    assert feature_loss(flat, a, b, normalize=False).item() == pytest.approx((a - b).abs().mean().item(), rel=1e-6)
    cos = 1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).mean()
    assert feature_loss(flat, a, b, distance="cosine", normalize=False).item() == pytest.approx(cos.item(), rel=1e-5)
    na, nb = instance_normalize(a.flatten(1)), instance_normalize(b.flatten(1))
    assert feature_loss(flat, a, b).item() == pytest.approx((na - nb).abs().mean().item(), rel=1e-5)
    # instance normalisation: per image and channel over positions
    f = torch.randn(2, 3, 5, 5) * 4 + 2
    n = instance_normalize(f)
    assert torch.allclose(n.mean((2, 3)), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(n.var((2, 3), unbiased=False), torch.ones(2, 3), atol=1e-3)
    # normalised features ignore a gain/offset of the features
    assert feature_loss(lambda t: 3 * t.flatten(1) + 1, a, b).item() == pytest.approx(feature_loss(flat, a, b).item(), rel=1e-4)


def test_feature_loss_frozen_encoder_gets_no_grad():
    torch.manual_seed(0)
    enc = TinyEncoder()
    y = smooth_image(size=32)
    x_enh = blur(y, 1.5).requires_grad_(True)
    assert abs(feature_loss(enc, y, y).item()) < 1e-6
    loss = feature_loss(enc, y, x_enh)
    assert loss.item() > 0.01
    loss.backward()
    assert all(p.grad is None for p in enc.parameters())
    assert all(p.requires_grad for p in enc.parameters())         # flags restored
    assert x_enh.grad is not None and x_enh.grad.abs().sum() > 0
    # not frozen: parameters do get gradients
    feature_loss(enc, y, x_enh, frozen=False).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    # frozen_params restores the flags even after an exception, and leaves already-frozen params alone
    enc.a.weight.requires_grad_(False)
    with pytest.raises(RuntimeError):
        with frozen_params(enc):
            assert not any(p.requires_grad for p in enc.parameters())
            raise RuntimeError("boom")
    assert [p.requires_grad for p in enc.parameters()] == [False, True, True, True]


def test_multi_encoder_feature_loss():
    y, z = smooth_image(c=3, size=32, seed=1), smooth_image(b=1, c=3, size=32, seed=2)
    x_enh = blur(y, 1.0).requires_grad_(True)
    enc_gen, enc_hq = TinyEncoder(c=3), TinyEncoder(c=3, width=2).requires_grad_(False)
    l_content = feature_loss(enc_gen, y, x_enh)
    l_cons = feature_loss(enc_hq, z, x_enh, distance="cosine")
    total = multi_encoder_feature_loss([(enc_gen, y, x_enh), (enc_hq, z, x_enh), (None, y, x_enh)],
                                       weights=(1.0, 2.0, 5.0), distance="cosine")
    want = feature_loss(enc_gen, y, x_enh, distance="cosine") + 2 * l_cons
    assert total.item() == pytest.approx(want.item(), rel=1e-5)
    mod = MultiEncoderFeatureLoss()([(enc_gen, y, x_enh), (enc_hq, z, x_enh)])
    assert mod.item() == pytest.approx((l_content + feature_loss(enc_hq, z, x_enh)).item() / 2, rel=1e-5)
    assert FeatureLoss(distance="cosine")(enc_hq, z, x_enh).item() == pytest.approx(l_cons.item(), rel=1e-6)
    mod.backward()
    assert all(p.grad is None for p in enc_gen.parameters()) and all(p.grad is None for p in enc_hq.parameters())
    assert x_enh.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least one triple"):
        multi_encoder_feature_loss([(None, y, x_enh)])
    with pytest.raises(ValueError, match=r"equal shapes for the reference and x_enh, got \(2, 4, 16, 16\) and \(2, 4, 32, 32\)"):
        feature_loss(enc_gen, z[..., :16, :16], x_enh)
    with pytest.raises(ValueError, match="distance: expected"):
        feature_loss(enc_gen, y, x_enh, distance="l2")


def test_load_feature_encoder(tmp_path):
    y = smooth_image(size=16)
    enc = TinyEncoder().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(enc, y, strict=False), str(tmp_path / "enc.pt"))
    loaded = load_feature_encoder(tmp_path / "enc.pt")
    assert not any(p.requires_grad for p in loaded.parameters())
    x_enh = blur(y, 1.0)
    assert feature_loss(loaded, y, x_enh).item() == pytest.approx(feature_loss(enc, y, x_enh).item(), rel=1e-5)
    # torch.export archive with a dynamic batch axis
    ep = torch.export.export(enc, (y,), dynamic_shapes=({0: torch.export.Dim("b", min=1, max=64)},))
    torch.export.save(ep, str(tmp_path / "enc.pt2"))
    loaded2 = load_feature_encoder(str(tmp_path / "enc.pt2"))
    assert not any(p.requires_grad for p in loaded2.parameters())
    assert feature_loss(loaded2, y[:1], x_enh).item() == pytest.approx(feature_loss(enc, y[:1], x_enh).item(), rel=1e-5)
    # errors name the file
    with pytest.raises(ValueError, match=r"nope\.pt' does not exist"):
        load_feature_encoder(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_text("not a model")
    with pytest.raises(ValueError, match=r"could not load .*bad\.pt"):
        load_feature_encoder(tmp_path / "bad.pt")
    torch.save(enc.state_dict(), tmp_path / "weights.pt")            # a state dict is not an encoder
    with pytest.raises(ValueError, match=r"could not load .*weights\.pt"):
        load_feature_encoder(tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="expected a local file"):
        load_feature_encoder("https://example.org/encoder.pt")


# ---------------------------------------------------------------- structure / illumination

def test_structure_loss():
    y = smooth_image(c=3, seed=7)
    assert abs(structure_loss(y, y).item()) < 1e-5
    assert abs(structure_loss(y, contrast_gain(y)).item()) < 1e-4
    assert abs(structure_loss(y, 0.8 * y + 0.1).item()) < 1e-4          # darker + lower contrast: still ~0
    noise = torch.rand(y.shape, generator=torch.Generator().manual_seed(9))
    assert structure_loss(y, noise).item() > 0.7
    assert structure_loss(y, 1 - y).item() > 1.5                         # inverted structure: s ~ -1
    vals = [structure_loss(y, blur(y, s)).item() for s in (0.5, 1.0, 2.0)]
    assert vals[0] < vals[1] < vals[2]
    # gray conversion: an RGB image and its gray copy give the same value
    g = kornia.color.rgb_to_grayscale(y)
    assert structure_loss(y, noise).item() == pytest.approx(
        structure_loss(g, kornia.color.rgb_to_grayscale(noise)).item(), abs=1e-3)
    assert StructureLoss(window=7)(y, noise).item() == pytest.approx(structure_loss(y, noise, window=7).item())
    x_enh = blur(y, 1.0).requires_grad_(True)
    structure_loss(y, x_enh).backward()
    assert torch.isfinite(x_enh.grad).all() and x_enh.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="window: expected an odd size"):
        structure_loss(y, y, window=10)


def test_illumination_loss():
    ramp = torch.linspace(0, 1, 96).view(1, 1, 1, 96).expand(2, 1, 96, 96)
    assert abs(illumination_loss(torch.full((2, 3, 96, 96), 0.37)).item()) < 1e-6
    vals = [illumination_loss(0.5 + a * (ramp - 0.5)).item() for a in (0.1, 0.3, 0.9)]
    assert vals[0] < vals[1] < vals[2]
    assert vals[1] == pytest.approx(3 * vals[0], rel=1e-4)               # linear in the illumination slope
    # hand value: 2x2 patches on a 4x4 image, patch means 0, 1, 0, 1 -> std 0.5
    x = torch.zeros(1, 1, 4, 4); x[..., 2:] = 1
    assert illumination_loss(x, patch_sizes=(2,)).item() == pytest.approx(0.5, abs=1e-5)
    assert illumination_loss(x, patch_sizes=(2, 4)).item() == pytest.approx(0.25, abs=1e-5)   # 4: one patch
    assert abs(illumination_loss(x, patch_sizes=(100,)).item()) < 1e-6                       # clamped
    assert IlluminationLoss((2,))(x).item() == pytest.approx(illumination_loss(x, (2,)).item())
    flat = torch.full((1, 1, 32, 32), 0.5, requires_grad=True)
    illumination_loss(flat, (8,)).backward()
    assert torch.isfinite(flat.grad).all()
    with pytest.raises(ValueError, match="patch_sizes"):
        illumination_loss(x, patch_sizes=(0,))
    with pytest.raises(ValueError, match=r"got shape \(1, 2, 4, 4\)"):
        illumination_loss(torch.rand(1, 2, 4, 4))


# ---------------------------------------------------------------- segmentation

def test_seg_losses():
    mask = torch.tensor([[[[1., 0.], [1., 0.]]]])
    assert dice_loss(torch.zeros(1, 1, 2, 2), mask).item() == pytest.approx(0.4)
    assert seg_loss(torch.zeros(1, 1, 2, 2), mask).item() == pytest.approx(0.4 + math.log(2), rel=1e-6)
    assert seg_loss(torch.zeros(1, 1, 2, 2), mask, w_dice=0.5, w_bce=2).item() == pytest.approx(0.2 + 2 * math.log(2), rel=1e-6)
    big = torch.zeros(2, 3, 16, 16); big[:, :, 4:12, 4:12] = 1
    assert seg_loss(30 * (2 * big - 1), big).item() < 1e-6
    assert dice_loss(30 * (1 - 2 * big), big).item() == pytest.approx(1 - 1 / (192 + 64 + 1), abs=1e-5)  # p=1 on 192 background px
    assert DiceLoss()(torch.zeros(1, 1, 2, 2), mask.bool()).item() == pytest.approx(0.4)
    assert SegLoss(w_dice=0)(torch.zeros(1, 1, 2, 2), mask).item() == pytest.approx(math.log(2), rel=1e-6)
    with pytest.raises(ValueError, match=r"equal shapes, got \(1, 1, 2, 2\) and \(1, 1, 3, 2\)"):
        dice_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 2))
    with pytest.raises(ValueError, match=r"\(B,K,H,W\)"):
        seg_loss(torch.zeros(2, 2), torch.zeros(2, 2))


# ---------------------------------------------------------------- HQGLoss

def _step_inputs(seed=0):
    torch.manual_seed(seed)
    gen, disc = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 1, 4, stride=4)
    x_lq, x_hq = smooth_image(c=3, size=32, seed=2), smooth_image(b=1, c=3, size=32, seed=3)
    x_enh = torch.sigmoid(gen(x_lq))
    return gen, disc, x_lq, x_hq, x_enh


def test_hqg_loss_total_and_terms():
    gen, disc, x_lq, x_hq, x_enh = _step_inputs()
    enc_gen, enc_hq = TinyEncoder(c=3), TinyEncoder(c=3, width=2).requires_grad_(False)
    seg_logits, mask = torch.randn(2, 1, 32, 32, requires_grad=True), (torch.rand(2, 1, 32, 32) > 0.5).float()
    loss_fn = HQGLoss(lambda_adv=1, lambda_wavelet=2, lambda_feat=0.5, lambda_cons=0.3, lambda_struct=0.25,
                      lambda_illum=0.05, lambda_kl=0.1, lambda_seg=0.7, illum_patch_sizes=(8, 16), levels=2)
    kl = torch.tensor(3.0, requires_grad=True)
    total, terms = loss_fn(x_lq, x_enh, fake_logits=disc(x_enh), x_hq=x_hq, kl=kl, enc_gen=enc_gen,
                           enc_hq=enc_hq, seg_logits=seg_logits, mask=mask)
    assert set(terms) == set(TERM_NAMES) | {"total"}
    assert all(not t.requires_grad and t.ndim == 0 for t in terms.values())
    want = dict(adv=gan_loss_g(disc(x_enh)), wavelet=wavelet_content_loss(x_lq, x_enh, levels=2),
                feat=feature_loss(enc_gen, x_lq, x_enh), cons=feature_loss(enc_hq, x_hq, x_enh),
                struct=structure_loss(x_lq, x_enh), illum=illumination_loss(x_enh, (8, 16)), kl=kl,
                seg=seg_loss(seg_logits, mask))
    for k, v in want.items():
        assert terms[k].item() == pytest.approx(v.item(), rel=1e-5), k
    assert total.item() == pytest.approx(sum(loss_fn.weights[k] * terms[k].item() for k in TERM_NAMES), rel=1e-5)
    assert terms["total"].item() == pytest.approx(total.item())
    total.backward()
    assert gen.weight.grad.abs().sum() > 0 and kl.grad.item() == pytest.approx(0.1)
    assert seg_logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc_gen.parameters())     # measured, not trained, by the feature term
    assert all(p.grad is None for p in enc_hq.parameters())


def test_hqg_loss_zero_weights_skip_terms():
    gen, disc, x_lq, x_hq, x_enh = _step_inputs(1)
    only = HQGLoss(lambda_adv=0, lambda_feat=0, lambda_cons=0, lambda_kl=0)
    total, terms = only(x_lq, x_enh)                              # all other inputs None
    assert total.item() == pytest.approx(10 * terms["wavelet"].item(), rel=1e-6)
    # exact: disabled terms are constant zeros the loss creates, not computed values
    assert {k: terms[k].item() for k in TERM_NAMES if k != "wavelet"} == {k: 0.0 for k in TERM_NAMES if k != "wavelet"}
    nothing = HQGLoss(**{f"lambda_{k}": 0 for k in TERM_NAMES})
    total, terms = nothing(x_lq, x_enh)
    assert total.item() == 0.0 and terms["total"].item() == 0.0     # exact: no term enabled, the constant zero start
    # defaults: the reconstruction's weights (exact: configured constants, no arithmetic)
    assert HQGLoss().weights == dict(adv=1.0, wavelet=10.0, feat=1.0, cons=1.0, struct=0.0, illum=0.0, kl=0.01, seg=0.0,
                                     style=0.0, guide=0.0)


def test_hqg_loss_missing_inputs_and_bad_weights():
    gen, disc, x_lq, x_hq, x_enh = _step_inputs(2)
    with pytest.raises(ValueError, match="lambda_adv=1.0 needs fake_logits"):
        HQGLoss()(x_lq, x_enh)
    with pytest.raises(ValueError, match="lambda_feat=1.0 needs enc_gen"):
        HQGLoss(lambda_adv=0)(x_lq, x_enh)
    with pytest.raises(ValueError, match="lambda_cons=1.0 needs x_hq, enc_hq"):
        HQGLoss(lambda_adv=0, lambda_feat=0)(x_lq, x_enh)
    with pytest.raises(ValueError, match="lambda_kl=0.01 needs kl"):
        HQGLoss(lambda_adv=0, lambda_feat=0, lambda_cons=0)(x_lq, x_enh)
    with pytest.raises(ValueError, match="lambda_seg=1.0 needs seg_logits, mask"):
        HQGLoss(lambda_adv=0, lambda_feat=0, lambda_cons=0, lambda_kl=0, lambda_seg=1)(x_lq, x_enh)
    with pytest.raises(ValueError, match=r"loss.lambda_wavelet: expected values >= 0.0, got -1.0"):
        HQGLoss(lambda_wavelet=-1)
    with pytest.raises(ValueError, match=r"loss.gan_kind: expected one of \['nonsat', 'lsgan', 'hinge'\], got 'wgan'"):
        HQGLoss(gan_kind="wgan")
    with pytest.raises(ValueError, match="x_enh: expected shape"):
        HQGLoss()(x_lq, x_enh[0, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_losses_dtype_grid(dtype):
    y = smooth_image(b=1, c=3, size=32, seed=8, dtype=dtype)
    x_enh = blur(y, 1.0)
    for v in (wavelet_content_loss(y, x_enh), structure_loss(y, x_enh), illumination_loss(x_enh, (8,)),
              feature_loss(lambda t: t.flatten(1), y, x_enh)):
        assert v.dtype == dtype and v.ndim == 0 and torch.isfinite(v)


def test_style_loss_with_precomputed_guide_statistics():
    from hqg.model.losses import style_loss, style_statistics
    g = torch.Generator().manual_seed(0)
    x_enh, x_ref = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g) * 0.5
    ref = style_statistics(x_ref)
    assert style_loss(x_enh, x_ref, ref_stats=ref).item() == pytest.approx(style_loss(x_enh, x_ref).item(), rel=1e-5)
    # statistics of another image replace those of x_ref
    other = style_statistics(torch.rand(1, 3, 32, 32, generator=g))
    assert abs(style_loss(x_enh, x_ref, ref_stats=other).item() - style_loss(x_enh, x_ref).item()) > 1e-3
    with pytest.raises(ValueError, match=r"ref_stats: expected \(1 or 2, 7\), got \(2, 3\)"):
        style_loss(x_enh, x_ref, ref_stats=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"loss.style_target: expected one of \['crop', 'image'\], got 'file'"):
        HQGLoss(style_target="file")
