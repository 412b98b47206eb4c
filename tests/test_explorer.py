"""Headless tests of hqg.app.explorer: widget values -> state() and render() (no display, no kernel)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from hqg.app.explorer import (GuidanceExplorer, DegradationExplorer, WaveletExplorer, load_images, detail_energy,
                              OVERLAYS)
from hqg.app.speed import bench_explorer
from hqg.eval.drift import structure_drift
from hqg.eval.uncertainty import enhance_samples, uncertainty_map
from hqg.model.networks import HQGNet
from hqg.model.wavelets import wavedec2

ROOT = Path(__file__).resolve().parents[1]
FUNDUS = ROOT / "data_samples" / "fundus"


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = HQGNet(3, "tiny")
    hq = [torch.rand(3, 32, 32) for _ in range(3)]
    net.set_default_guidance(hq)
    calls = []
    enc = net.encode_guidance
    net.encode_guidance = lambda x: (calls.append(x.shape), enc(x))[1]   # count encoder calls
    lq = [torch.rand(3, 32, 32) for _ in range(2)]
    return net, lq, hq, calls


@pytest.fixture
def gx(setup):
    net, lq, hq, calls = setup
    calls.clear()
    return GuidanceExplorer(net, lq, hq)


def test_guidance_construct_and_state(gx):
    assert gx.state() == dict(lq=0, guide_a=0, guide_b=1, alpha=0.0, tau=0.0, seed=0, view="after",
                              overlay="none", samples=False, sample=0)
    r = gx.render()
    assert set(r) == {"lq", "enh", "diff", "overlay"} and r["overlay"] is None
    for k in ("lq", "enh", "diff"):
        v = r[k]
        assert v.shape == (32, 32, 3) and v.min() >= 0 and v.max() <= 1
    np.testing.assert_allclose(r["diff"], np.abs(r["enh"] - r["lq"]), rtol=0, atol=1e-6)
    assert gx.image.value[:8] == b"\x89PNG\r\n\x1a\n" and len(gx.thumb_a.value) > 0
    gx.lq.value = 1; gx.tau.value = 0.5; gx.seed.value = 7; gx.view.value = "difference"
    gx.overlay.value = "lost"; gx.samples.value = True; gx.sample.value = 6
    assert gx.state() == dict(lq=1, guide_a=0, guide_b=1, alpha=0.0, tau=0.5, seed=7, view="difference",
                              overlay="lost", samples=True, sample=6)
    assert gx.sample.max == 7 and OVERLAYS == ("none", "uncertainty", "created", "lost")


def test_guidance_changes_output_and_figure(gx):
    e0, png0 = gx.render()["enh"], gx.image.value
    gx.guide_a.value = 2
    assert np.abs(gx.render()["enh"] - e0).max() > 1e-4
    assert gx.image.value != png0                     # the displayed figure was redrawn


def test_guidance_blend_endpoints(gx, setup):
    net, lq, hq, _ = setup
    gx.guide_a.value, gx.guide_b.value = 0, 2
    only = lambda i: net.enhance(lq[0], hq[i]).permute(1, 2, 0).clamp(0, 1).numpy()
    gx.alpha.value = 0.0
    np.testing.assert_allclose(gx.render()["enh"], only(0), rtol=0, atol=1e-6)
    gx.alpha.value = 1.0
    np.testing.assert_allclose(gx.render()["enh"], only(2), rtol=0, atol=1e-6)
    torch.testing.assert_close(gx.blended_code(), gx.code(2), rtol=0, atol=1e-6)
    gx.alpha.value = 0.5
    torch.testing.assert_close(gx.blended_code(), 0.5 * (gx.code(0) + gx.code(2)))
    mid = gx.render()["enh"]
    assert np.abs(mid - only(0)).max() > 1e-5 and np.abs(mid - only(2)).max() > 1e-5   # ~5e-5 with this untrained net


def test_guidance_temperature_and_seed(gx):
    a = gx.render()["enh"]
    gx._last = None                                   # force a recomputation
    np.testing.assert_array_equal(gx.render()["enh"], a)   # tau = 0: deterministic (exact: same process)
    gx.seed.value = 5                                 # seed is irrelevant at tau = 0
    np.testing.assert_array_equal(gx.render()["enh"], a)
    gx.tau.value = 1.0
    b = gx.render()["enh"]
    gx._last = None
    np.testing.assert_array_equal(gx.render()["enh"], b)   # same seed, same noise (exact: same process)
    gx.seed.value = 6
    assert np.abs(gx.render()["enh"] - b).max() > 1e-4      # another seed, another sample
    assert np.abs(b - a).max() > 1e-4                        # tau > 0 differs from tau = 0


def test_guidance_codes_cached(gx, setup):
    calls = setup[3]
    assert len(calls) == 2                           # A = 0 and B = 1 at construction
    for v in [2, 0, 1, 2, 0, 2, 1, 0]:
        gx.guide_a.value = v; gx.guide_b.value = (v + 1) % 3
    gx.alpha.value = 0.3; gx.tau.value = 0.2; gx.view.value = "wavelet bands"
    assert len(calls) == 3 and len(gx._codes) == 3  # each HQ image encoded exactly once
    assert all(s == (1, 3, 32, 32) for s in calls)


def test_guidance_enhancement_cached(gx):
    before = gx._last
    gx.view.value = "before"                         # view change: no new enhancement
    assert gx._last is before


def test_guidance_inputs_from_paths_and_folder():
    net = HQGNet(3, "tiny")
    lq = sorted((FUNDUS / "lq").glob("*.png"))[:1]
    g = GuidanceExplorer(net, lq, FUNDUS / "hq")
    assert len(g.hq_images) == 14 and g.guide_a.max == 13
    assert g.render()["enh"].shape == (192, 192, 3)


def test_load_images_errors():
    with pytest.raises(ValueError, match="not a folder"):
        load_images("no/such/folder", "hq_images")
    with pytest.raises(ValueError, match=r"hq_images\[0\]"):
        load_images([torch.rand(8, 8)], "hq_images")
    with pytest.raises(ValueError, match="at least one image"):
        load_images([], "lq_images")


def _samples(gx, net):
    s = gx.state()
    return enhance_samples(net, gx.lq_images[s["lq"]], code=gx.blended_code(), n=gx.n_samples,
                           temperature=s["tau"], seed=s["seed"])


def test_guidance_uncertainty_overlay(gx, setup):
    net = setup[0]
    gx.overlay.value = "uncertainty"
    r = gx.render()
    assert r["overlay"].shape == (32, 32) and abs(float(r["overlay"].max())) < 1e-7   # tau = 0: no spread
    gx.tau.value = 1.0; gx.seed.value = 3
    want = uncertainty_map(_samples(gx, net).std)[0].numpy()
    np.testing.assert_allclose(gx.render()["overlay"], want, rtol=0, atol=1e-6)
    assert want.max() > 1e-4
    gx.tau.value = 2.0
    assert gx.render()["overlay"].mean() > want.mean()                # more temperature, more spread


def test_guidance_drift_overlays(gx):
    gx.tau.value = 0.5
    png = gx.image.value
    gx.overlay.value = "created"
    d = structure_drift(gx.lq_images[0], gx.enhanced())
    np.testing.assert_allclose(gx.render()["overlay"], d.created[0].numpy(), rtol=0, atol=1e-6)
    assert gx.image.value != png                                      # the overlay panel was drawn
    gx.overlay.value = "lost"
    np.testing.assert_allclose(gx.render()["overlay"], d.lost[0].numpy(), rtol=0, atol=1e-6)
    gx.overlay.value = "none"
    assert gx.render()["overlay"] is None and gx._samples is None       # no samples were ever needed


def test_guidance_samples_control_and_cache(gx, setup):
    net = setup[0]
    single = gx.render()["enh"]
    gx.samples.value = True                                            # tau = 0: every sample is the output
    np.testing.assert_allclose(gx.render()["enh"], single, rtol=0, atol=1e-6)
    gx.tau.value = 1.0
    ref = _samples(gx, net)
    cached = gx._samples
    outs = []
    for k in (0, 4, 7):
        gx.sample.value = k
        e = gx.render()["enh"]
        np.testing.assert_allclose(e, ref.samples[k].permute(1, 2, 0).clamp(0, 1).numpy(), rtol=0, atol=1e-5)
        outs.append(e)
    assert gx._samples is cached                                       # moving the sample slider: no decoding
    assert np.abs(outs[0] - outs[1]).max() > 1e-4
    gx.guide_a.value = 2                                               # new guidance: new samples
    assert gx._samples is not cached and gx._samples[0][1] == 2
    gx.samples.value = False
    np.testing.assert_allclose(gx.render()["enh"], gx.enhanced().permute(1, 2, 0).clamp(0, 1).numpy(), rtol=0, atol=1e-6)


def test_guidance_n_samples_errors(setup):
    net, lq, hq, _ = setup
    with pytest.raises(ValueError, match="n_samples: expected an int >= 2"):
        GuidanceExplorer(net, lq, hq, n_samples=1)
    g = GuidanceExplorer(net, lq, hq, n_samples=3)
    assert g.sample.max == 2


@pytest.fixture
def dx():
    return DegradationExplorer(FUNDUS / "hq" / "hq_02_crop.png")


def _neutral(dx):
    dx.strength.value, dx.gamma.value, dx.t.value, dx.radius.value, dx.sigma.value = 0.0, 1.0, 1.0, 0.0, 0.0
    dx.enabled["jpeg"].value = False


def test_degradation_neutral_reproduces_input(dx):
    r = dx.render()
    assert r["image"].shape == (192, 192, 3) and r["energy"].shape == (3,)
    assert np.abs(r["image"] - dx.x.permute(1, 2, 0).numpy()).max() > 0.01   # default settings degrade
    _neutral(dx)
    assert dx.ops() == []
    np.testing.assert_array_equal(dx.render()["image"], dx.x.permute(1, 2, 0).numpy())   # exact: no op, the input itself
    np.testing.assert_allclose(dx.render()["energy"], detail_energy(dx.x, 3))
    dx.live = False
    for k in dx.STEPS: dx.enabled[k].value = False      # checkboxes off: also the input
    dx.radius.value = 3.0
    np.testing.assert_array_equal(dx.render()["image"], dx.x.permute(1, 2, 0).numpy())


def test_degradation_blur_lowers_fine_energy(dx):
    dx.live = False
    _neutral(dx)
    e0 = dx.render()["energy"]
    dx.radius.value = 1.0; e1 = dx.render()["energy"]
    dx.radius.value = 3.0; e3 = dx.render()["energy"]
    assert e3[0] < e1[0] < e0[0]
    assert dx.state()["radius"] == 3.0
    assert dx.ops() == [("defocus_blur", dict(radius=3.0))]


def test_degradation_fixed_seed_and_order(dx):
    dx.live = False
    a = dx.render()["image"]
    np.testing.assert_array_equal(dx.render()["image"], a)      # fixed seed: reproducible (exact: same process)
    dx.seed.value = 1
    assert np.abs(dx.render()["image"] - a).max() > 1e-2          # noise / illumination field follow the seed
    assert [f for f, _ in dx.ops()] == ["uneven_illumination", "haze", "defocus_blur", "gaussian_noise", "jpeg"]
    _neutral(dx); dx.sigma.value = 0.05
    assert dx.render()["energy"][0] > 2 * detail_energy(dx.x, 3)[0]   # noise adds fine-scale energy


@pytest.fixture
def wx():
    return WaveletExplorer(FUNDUS / "lq" / "lq_00_fov.png")


@pytest.mark.parametrize("wavelet", WaveletExplorer.WAVELETS)
@pytest.mark.parametrize("mode", WaveletExplorer.MODES)
def test_wavelet_bands_and_reconstruction(wx, wavelet, mode):
    wx.live = False                                   # values only: skip the figure redraws
    wx.wavelet.value, wx.mode.value, wx.level.value = wavelet, mode, 3
    c = wavedec2(wx.x[None].double(), wavelet, 3, mode)
    for k in (1, 2, 3):
        wx.band_level.value = k
        for i, b in enumerate(("lh", "hl", "hh")):
            wx.band.value = b
            r = wx.render()
            assert r["band"].shape == tuple(c[4 - k][i].shape[1:])
            np.testing.assert_allclose(r["band"], c[4 - k][i][0].numpy(), rtol=0, atol=1e-10)
            assert r["error"] < 1e-5
    wx.band.value, wx.band_level.value = "ll", 3
    assert wx.render()["band"].shape == tuple(c[0].shape[1:])
    assert wx.state() == dict(wavelet=wavelet, mode=mode, level=3, band="ll", band_level=3)


def test_wavelet_redraw(wx):
    png = wx.image.value
    wx.band.value = "hh"
    assert wx.image.value != png and wx.error.value.startswith("reconstruction error")
    wx.live = False; png = wx.image.value
    wx.band.value = "hl"
    assert wx.image.value == png                      # not live: no redraw
    assert wx.refresh()["band"].shape == (3, 96, 96) and wx.image.value != png


def test_degradation_redraw(dx):
    png = dx.image.value
    dx.radius.value = 2.0
    assert dx.image.value != png and dx.image.value[:4] == b"\x89PNG"


def test_wavelet_level_limits(wx):
    assert wx.level.max == 4
    wx.level.value = 4; wx.band_level.value = 4
    wx.level.value = 2
    assert wx.band_level.max == 2 and wx.band_level.value == 2   # band level clamped to the levels
    small = WaveletExplorer(torch.rand(1, 16, 16))
    small.wavelet.value = "db4"                                  # 16 px allows only 1 level of db4
    assert small.level.max == 1 and small.level.value == 1
    assert small.render()["band"].shape[0] == 1
    with pytest.raises(ValueError, match="too small"):
        WaveletExplorer(torch.rand(1, 1, 1))


@pytest.mark.slow
def test_bench_explorer_under_one_second():
    r = bench_explorer(n=3, verbose=False)
    assert r["size"] == (192, 192) and r["uncached_s"] < 1.0 and r["cached_s"] < 1.0
    r = bench_explorer(n=3, verbose=False, overlay="uncertainty")
    assert r["overlay"] == "uncertainty" and r["uncached_s"] < 2.0
