"""hqg.model.wavelets against PyWavelets: values, shapes, reconstruction, gradients, errors, modules, figure, bench."""
import os
import warnings

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import pywt
import torch

from hqg.model.wavelets import (DWT2, IDWT2, MODES, get_wavelet, max_level, show_subbands, wavedec2,
                                wavelet_filters, waverec2)
from hqg.app.speed import bench_wavelets

WAVELETS = ["haar", "db2", "db4", "sym4", "coif1"]
SIZES = [(16, 16), (17, 13), (33, 30)]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _grid():
    for w in WAVELETS:
        for size in SIZES:
            for level in range(1, min(3, pywt.dwt_max_level(min(size), pywt.Wavelet(w).dec_len)) + 1):
                yield w, size, level


GRID = list(_grid())


def _flat(c):
    return [c[0]] + [b for d in c[1:] for b in d]


def _maxdiff(ours, ref):
    assert [tuple(t.shape) for t in _flat(ours)] == [r.shape for r in _flat(ref)]
    return max(float(np.abs(t.double().numpy() - r).max()) for t, r in zip(_flat(ours), _flat(ref)))


def test_grid_covers_levels_1_to_3():
    assert {lev for *_, lev in GRID} == {1, 2, 3}
    assert {w for w, *_ in GRID} == set(WAVELETS)
    assert len(GRID) >= 25


# every level PyWavelets accepts, also above the maximum useful level (where it warns), in every mode we support;
# odd and non-square sizes, some shorter than 2 (L - 1) at the deepest level (the extension wraps or mirrors again)
DEEP_SIZES = [(17, 23), (64, 48), (33, 32), (9, 13), (5, 4)]
DEEP = [(w, m, s, lev) for w in WAVELETS for m in MODES for s in DEEP_SIZES for lev in (1, 2, 3)]


def _pywt_or_error(fn):
    "Run a PyWavelets call, recording its warnings; return (result or the ValueError, warning messages)."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except ValueError as e:
            out = e
    return out, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_deep_grid_has_levels_above_the_useful_maximum():
    above = [c for c in DEEP if c[3] > pywt.dwt_max_level(min(c[2]), pywt.Wavelet(c[0]).dec_len)]
    assert len(DEEP) == 450 and len(above) >= 200
    assert any(min(s) / 2 ** (lev - 1) < pywt.Wavelet(w).dec_len for w, _, s, lev in above)  # shorter than the filter
    assert ("haar", "reflect", (5, 4), 3) in DEEP  # PyWavelets refuses this one (a 2x1 approximation to reflect)


@pytest.mark.parametrize("wavelet,mode,size,level", DEEP, ids=[f"{w}-{m}-{h}x{ww}-L{lev}" for w, m, (h, ww), lev in DEEP])
def test_every_level_pywt_accepts(wavelet, mode, size, level):
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    ref, pywt_warned = _pywt_or_error(lambda: pywt.wavedec2(x.numpy(), wavelet, mode=mode, level=level, axes=(-2, -1)))
    if isinstance(ref, ValueError):  # e.g. reflect on an axis of length 1: refuse too, with our own message
        with pytest.raises(ValueError, match="reflect needs >= 2 samples per axis"):
            wavedec2(x, wavelet, level=level, mode=mode)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = wavedec2(x, wavelet, level=level, mode=mode)
    ours_warned = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert bool(ours_warned) == bool(pywt_warned)  # warn exactly where PyWavelets warns
    if ours_warned:
        h, w = size
        assert f"level={level}" in ours_warned[0] and f"'{wavelet}'" in ours_warned[0] and f"{h}x{w} image" in ours_warned[0]
    assert _maxdiff(ours, ref) < 1e-10
    rec_ref = pywt.waverec2(ref, wavelet, mode=mode, axes=(-2, -1))
    rec = waverec2(ours, wavelet, mode=mode)
    assert rec.shape == rec_ref.shape and float(np.abs(rec.numpy() - rec_ref).max()) < 1e-10
    assert float((waverec2(ours, wavelet, mode=mode, size=size) - x).abs().max()) < 1e-10  # perfect reconstruction


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mode", ["periodization", "symmetric"])
@pytest.mark.parametrize("wavelet,size,level", GRID, ids=[f"{w}-{h}x{ww}-L{lev}" for w, (h, ww), lev in GRID])
def test_matches_pywt_and_reconstructs(wavelet, size, level, mode, dtype):
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    ref = pywt.wavedec2(x.numpy(), wavelet, mode=mode, level=level, axes=(-2, -1))
    xt = x.to(dtype)
    ours = wavedec2(xt, wavelet, level=level, mode=mode)
    assert ours[0].dtype == dtype and len(ours) == level + 1
    assert _maxdiff(ours, ref) < TOL[dtype]
    # inverse: same shape and values as pywt.waverec2 (one pixel larger for odd sizes), then exact crop
    rec_ref = pywt.waverec2(ref, wavelet, mode=mode, axes=(-2, -1))
    rec = waverec2(ours, wavelet, mode=mode)
    assert rec.shape == rec_ref.shape
    assert float(np.abs(rec.double().numpy() - rec_ref).max()) < TOL[dtype]
    pr = waverec2(ours, wavelet, mode=mode, size=size)
    assert pr.shape == x.shape
    assert float((pr.double() - x).abs().max()) < TOL[dtype]


def test_odd_size_reconstruction_is_one_larger_like_pywt():
    x = torch.rand(1, 1, 17, 13, dtype=torch.float64)
    for mode in ("periodization", "symmetric"):
        assert waverec2(wavedec2(x, "db2", 1, mode), "db2", mode).shape == (1, 1, 18, 14)


@pytest.mark.parametrize("mode", ["zero", "reflect", "periodic", "constant"])
@pytest.mark.parametrize("wavelet", ["db2", "bior2.2", "rbio3.1"])
def test_optional_modes_and_biorthogonal(wavelet, mode):
    x = torch.randn(1, 2, 25, 22, dtype=torch.float64)
    ref = pywt.wavedec2(x.numpy(), wavelet, mode=mode, level=2, axes=(-2, -1))
    ours = wavedec2(x, wavelet, level=2, mode=mode)
    assert _maxdiff(ours, ref) < 1e-10
    rec = waverec2(ours, wavelet, mode=mode)
    assert np.abs(rec.numpy() - pywt.waverec2(ref, wavelet, mode=mode, axes=(-2, -1))).max() < 1e-10
    assert (waverec2(ours, wavelet, mode=mode, size=(25, 22)) - x).abs().max() < 1e-10


@pytest.mark.parametrize("mode", ["periodization", "symmetric", "reflect"])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (3, 2), (5, 4)])
def test_tiny_images_with_long_filters(size, mode):
    # level 1 on images shorter than the filter: the extension wraps several times (pywt allows it with a warning)
    if mode == "reflect" and 1 in size:
        pytest.skip("pywt refuses reflect mode on a 1-sample axis")
    x = torch.randn(1, 1, *size, dtype=torch.float64)
    with pytest.warns(UserWarning):
        ref = pywt.wavedec2(x.numpy(), "db4", mode=mode, level=1, axes=(-2, -1))
    from hqg.model.wavelets import _analysis_matrices, _dwt2_level, _idwt2_level  # one level, no level check
    _, rec = wavelet_filters("db4", torch.float64)
    bands = _dwt2_level(x[:, 0], _analysis_matrices("db4", torch.float64), mode)
    for band, r in zip(bands, [ref[0]] + list(ref[1])):
        assert np.abs(band[:, None].numpy() - r).max() < 1e-10
    y = torch.stack(bands, 1)
    if mode == "periodization":
        back = pywt.waverec2(ref, "db4", mode=mode, axes=(-2, -1))
        assert np.abs(_idwt2_level(y, rec, mode).numpy() - back).max() < 1e-10


def test_band_order_and_meaning():
    # a horizontal edge (change down the rows) is a horizontal detail: lh = pywt cH; a vertical edge goes to hl
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    x[..., 3:, :] = 1.0  # edge between rows 2 and 3: inside a 2x2 Haar block
    ll, (lh, hl, hh) = wavedec2(x, "haar", 1)
    assert lh.abs().max() > 0.4 and hl.abs().max() < 1e-12 and hh.abs().max() < 1e-12  # zero up to rounding
    ll, (lh, hl, hh) = wavedec2(x.transpose(-1, -2), "haar", 1)  # non-contiguous input is fine
    assert hl.abs().max() > 0.4 and lh.abs().max() < 1e-12


@pytest.mark.parametrize("mode", MODES)
def test_haar_convolution_path_matches_products(mode, monkeypatch):
    # Haar on even sizes runs one conv2d when oneDNN is on (CPU), the matrix products otherwise: same values
    x = torch.rand(2, 3, 16, 12, dtype=torch.float64)
    fast = wavedec2(x, "haar", 2, mode)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    products = wavedec2(x, "haar", 2, mode)
    for a, b in zip(_flat(fast), _flat(products)):
        assert a.shape == b.shape and float((a - b).abs().max()) < 1e-12


def test_parseval_periodization():
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    c = wavedec2(x, "db4", level=2, mode="periodization")
    energy = sum(float(t.pow(2).sum()) for t in _flat(c))
    assert abs(energy / float(x.pow(2).sum()) - 1) < 1e-10


def test_none_bands_and_linearity():
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    c = wavedec2(x, "sym4", 1, "symmetric")
    low = waverec2([c[0], (None, None, None)], "sym4", "symmetric")
    high = waverec2([torch.zeros_like(c[0]), c[1]], "sym4", "symmetric")
    assert float((low + high - x).abs().max()) < 1e-10


@pytest.mark.parametrize("mode", ["periodization", "symmetric"])
@pytest.mark.parametrize("wavelet,size,level", [("haar", (7, 6), 2), ("haar", (8, 12), 2), ("db2", (9, 8), 1),
                                                ("db2", (12, 13), 2), ("db4", (5, 4), 2)])  # db4: above the useful level
@pytest.mark.filterwarnings("ignore:level=2 is above")
def test_gradcheck(wavelet, size, level, mode):
    x = torch.randn(1, 1, *size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: tuple(_flat(wavedec2(x, wavelet, level, mode))), (x,))
    flat = [t.detach().clone().requires_grad_() for t in _flat(wavedec2(x.detach(), wavelet, level, mode))]

    def inverse(*t):
        return waverec2([t[0]] + [tuple(t[1 + 3 * i:4 + 3 * i]) for i in range(level)], wavelet, mode)

    assert torch.autograd.gradcheck(inverse, tuple(flat))


def test_errors():
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match=r"expected shape \(B,C,H,W\), got \(1, 16, 16\)"):
        wavedec2(x[0])
    with pytest.raises(ValueError, match=r"got \(1, 1, 1, 16, 16\)"):
        wavedec2(x[None])
    with pytest.raises(ValueError, match="floating-point"):
        wavedec2(x.long())
    with pytest.raises(ValueError, match="mode='smooth' is not supported: expected one of periodization, symmetric"):
        wavedec2(x, mode="smooth")
    with pytest.raises(ValueError, match="mode='wrap'"):
        waverec2(wavedec2(x), mode="wrap")
    for bad in ("db99", "morl", "nope"):
        with pytest.raises(ValueError, match=f"wavelet='{bad}' is not supported.*haar.*db.*sym.*coif"):
            wavedec2(x, wavelet=bad)
    with pytest.warns(UserWarning, match=r"level=3 is above the maximum useful level 2 for a 16x16 image and "
                                         r"wavelet 'db2' \(filter length 4\)"):
        wavedec2(x, "db2", level=3)
    with pytest.warns(UserWarning, match="maximum useful level 0 for a 6x40 image"):
        wavedec2(torch.rand(1, 1, 6, 40), "db4")
    with pytest.raises(ValueError, match=r"mode='reflect': level 3 of a 3x8 image with wavelet 'haar' gets a 1x2"):
        wavedec2(torch.rand(1, 1, 3, 8), "haar", level=3, mode="reflect")
    for lev in (0, -1, 1.5):
        with pytest.raises(ValueError, match="level: expected an integer >= 1"):
            wavedec2(x, level=lev)
    c = wavedec2(x, "haar", 2)
    with pytest.raises(ValueError, match="does not fit"):
        waverec2([c[0][..., :2, :]] + c[1:])
    with pytest.raises(ValueError, match="one shape"):
        waverec2([c[0], (c[1][0], c[1][1][..., :3], c[1][2])] + c[2:])
    with pytest.raises(ValueError, match="expected a tuple"):
        waverec2([c[0], c[1][:2]] + c[2:])
    with pytest.raises(ValueError, match=r"size: expected at most \(16, 16\)"):
        waverec2(c, size=(17, 16))
    with pytest.raises(ValueError, match="coeffs: expected a list"):
        waverec2(torch.rand(1, 1, 4, 4))


def test_filters_cached_and_dtypes():
    assert MODES[:2] == ("periodization", "symmetric") and "zero" in MODES
    d1, r1 = wavelet_filters("db2", torch.float64)
    assert wavelet_filters("db2", torch.float64)[0] is d1 and d1.dtype == torch.float64 and d1.shape == (4, 1, 4, 4)
    assert r1.shape == (4, 1, 4, 4)
    assert get_wavelet("haar").dec_len == 2 and max_level((33, 30), "coif1") == 2
    from hqg.model.wavelets import _analysis_matrices
    m = _analysis_matrices("db2", torch.float64)
    assert m.shape == (2, 8, 18) and _analysis_matrices("db2", torch.float64) is m  # (low/high, P, K), cached
    assert torch.equal(m[1, 3, 6:10], torch.tensor(pywt.Wavelet("db2").dec_hi[::-1], dtype=torch.float64))  # exact: copied taps, no arithmetic


def test_modules_agree_with_functions():
    x = torch.rand(2, 3, 24, 20)
    for mode in ("periodization", "symmetric"):
        dwt, idwt = DWT2("db2", level=2, mode=mode), IDWT2("db2", mode=mode)
        assert len(dwt.state_dict()) == 0 and dwt.dec.shape == (4, 1, 4, 4) and idwt.rec.shape == (4, 1, 4, 4)
        cm, cf = dwt(x), wavedec2(x, "db2", 2, mode)
        for a, b in zip(_flat(cm), _flat(cf)):
            assert torch.equal(a, b)
        assert torch.equal(idwt(cm), waverec2(cf, "db2", mode))
        assert float((idwt(cm, size=(24, 20)) - x).abs().max()) < 1e-5
    d64 = DWT2("sym4", level=1).double()
    assert d64.dec.dtype == torch.float64 and d64(x.double())[0].dtype == torch.float64
    assert "wavelet='sym4', level=1, mode='periodization'" in repr(d64)
    with pytest.warns(UserWarning, match="maximum useful level 2"):
        deep = DWT2("db2", level=3)(x)
    ref, _ = _pywt_or_error(lambda: pywt.wavedec2(x.double().numpy(), "db2", "periodization", 3, (-2, -1)))
    assert _maxdiff(deep, ref) < 1e-5
    with pytest.raises(ValueError, match="'morl' is not supported"):
        IDWT2("morl")


def test_gradients_reach_input_through_module():
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss = sum(b.abs().mean() for d in DWT2("haar", 2)(x)[1:] for b in d)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.rand(2, 3, 33, 30)
    for mode in ("periodization", "symmetric"):
        cg, cc = wavedec2(x.cuda(), "db2", 2, mode), wavedec2(x, "db2", 2, mode)
        for a, b in zip(_flat(cg), _flat(cc)):
            assert a.is_cuda and float((a.cpu() - b).abs().max()) < 1e-5
        assert float((waverec2(cg, "db2", mode, size=(33, 30)).cpu() - x).abs().max()) < 1e-5


def test_show_subbands_figure():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    gray, rgb = torch.rand(1, 64, 48), torch.rand(1, 3, 33, 30)
    fig = show_subbands(gray, "haar", level=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    im = fig.axes[0].images[0].get_array()
    assert im.shape == (64, 48) and float(im.min()) >= 0 and float(im.max()) <= 1
    fig3 = show_subbands(rgb, "db2", level=2, mode="symmetric")
    assert fig3.axes[0].images[0].get_array().shape[-1] == 3
    grid = show_subbands(rgb[0], "db2", level=2, layout="grid")
    assert len(grid.axes) == 8 and grid.axes[0].get_title() == "LL1"
    assert grid.axes[5].images[0].get_array().shape == (9, 8, 3)  # LH2 of a 33x30 image, periodization
    for f in (fig, fig3, grid):
        plt.close(f)
    with pytest.raises(ValueError, match="one image"):
        show_subbands(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        show_subbands(torch.rand(2, 16, 16))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        show_subbands(torch.rand(1, 16, 16) + 1)
    with pytest.warns(UserWarning, match="maximum useful level"):
        plt.close(show_subbands(torch.rand(1, 16, 16), "db2", level=3))


def test_bench_tiny(capsys):
    r = bench_wavelets(batch=1, channels=1, size=32, wavelet="db2", level=2, repeats=2)
    assert r["shape"] == (1, 1, 32, 32) and r["wavelet"] == "db2" and r["level"] == 2
    for k in ("pywt_best_ms", "pywt_median_ms", "hqg_best_ms", "hqg_median_ms", "speedup"):
        assert r[k] > 0
    assert r["pywt_best_ms"] <= r["pywt_median_ms"] and r["max_abs_diff"] < 1e-5
    assert abs(r["speedup"] - r["pywt_best_ms"] / r["hqg_best_ms"]) < 1e-9
    out = capsys.readouterr().out
    assert "PyWavelets" in out and "speedup" in out
    assert bench_wavelets(batch=1, channels=1, size=16, level=1, repeats=1, threads=1, verbose=False)["threads"] == 1
    with pytest.raises(ValueError, match="threads"):
        bench_wavelets(threads=0)


@pytest.mark.slow
def test_bench_speedup_at_least_3x():
    # the acceptance case on the 2-core CPU (conftest pins tests to one torch thread; the bench uses both cores)
    r = bench_wavelets(repeats=11, threads=min(2, os.cpu_count() or 1))
    assert r["threads"] == min(2, os.cpu_count() or 1) and torch.get_num_threads() == 1
    assert r["speedup"] >= 3, r
