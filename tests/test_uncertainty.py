"""Tests for hqg.eval.uncertainty: variational samples (exactness, seeds, batching), uncertainty maps, bad input."""
import pytest
import torch

from hqg.core import repo_file
from hqg.data.io import list_images, read_image
from hqg.model.networks import HQGNet
from hqg.eval.uncertainty import (Samples, enhance_samples, local_contrast, sample_generator, sample_seed,
                             uncertainty_map, uncertainty_score)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return HQGNet(3, "tiny").eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 24, 36, generator=g), torch.randn(2, 64, generator=g)


def test_shapes_and_single_image(net, data):
    x, code = data
    r = enhance_samples(net, x, code=code, n=3)
    assert isinstance(r, Samples)
    assert r.mean.shape == (2, 3, 24, 36) and r.std.shape == (2, 3, 24, 36) and r.samples.shape == (3, 2, 3, 24, 36)
    assert r.samples.min() >= 0 and r.samples.max() <= 1
    torch.testing.assert_close(r.mean, r.samples.mean(0))
    torch.testing.assert_close(r.std, r.samples.std(0))
    one = enhance_samples(net, x[0], code=code[:1], n=3)
    assert one.mean.shape == (3, 24, 36) and one.samples.shape == (3, 3, 24, 36)


def test_std_zero_at_temperature_zero(net, data):
    x, code = data
    r = enhance_samples(net, x, code=code, n=4, temperature=0.0, seed=3)
    assert torch.equal(r.std, torch.zeros_like(r.std))     # exact: zeros by construction when noise-free
    det = net.enhance(x, code=code, temperature=0.0)
    for k in range(4):
        torch.testing.assert_close(r.samples[k], det, rtol=0, atol=1e-6)


def test_std_grows_with_temperature(net, data):
    x, code = data
    s = [float(uncertainty_score(enhance_samples(net, x, code=code, n=6, temperature=t).std).mean())
         for t in (0.0, 0.25, 1.0, 3.0)]
    assert abs(s[0]) < 1e-12 and 0 < s[1] < s[2] < s[3]


def test_reproducible_for_a_seed(net, data):
    x, code = data
    a = enhance_samples(net, x, code=code, n=4, seed=7)
    b = enhance_samples(net, x, code=code, n=4, seed=7)
    assert torch.equal(a.samples, b.samples)                 # exact: same seed, same process
    c = enhance_samples(net, x, code=code, n=4, seed=8)
    assert (a.samples - c.samples).abs().max() > 1e-4
    assert (a.samples[0] - a.samples[1]).abs().max() > 1e-4          # samples differ from each other


def test_batched_equals_separate_calls(net, data):
    x, code = data
    r = enhance_samples(net, x, code=code, n=5, temperature=1.5, seed=2)
    for k in range(5):
        single = net.enhance(x, code=code, temperature=1.5, generator=sample_generator(2, k))
        torch.testing.assert_close(r.samples[k], single, rtol=0, atol=1e-5)
    ref = enhance_samples(net, x, code=code, n=5, temperature=1.5, seed=2, fast=False)   # Generator.decode per sample
    for k in range(5):
        torch.testing.assert_close(ref.samples[k], net.enhance(x, code=code, temperature=1.5, generator=sample_generator(2, k)),
                                   rtol=0, atol=1e-6)
    torch.testing.assert_close(r.samples, ref.samples, rtol=0, atol=1e-5)


def test_chunks_and_n_do_not_change_samples(net, data):
    x, code = data
    full = enhance_samples(net, x, code=code, n=5, seed=4)
    for chunk in (1, 2, 5):                                              # 5: one decoder pass over n x B rows
        torch.testing.assert_close(enhance_samples(net, x, code=code, n=5, seed=4, chunk=chunk).samples,
                                   full.samples, rtol=0, atol=1e-6)
    torch.testing.assert_close(enhance_samples(net, x, code=code, n=2, seed=4).samples, full.samples[:2],
                               rtol=0, atol=1e-6)


def test_encoder_runs_once(net, data):
    x, code = data
    calls = []
    h = net.gen.stem.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try: enhance_samples(net, x, code=code, n=6)
    finally: h.remove()
    assert calls == [2]                                                  # one encoder pass over B = 2 images


@pytest.mark.parametrize("variant", ["deterministic", "official"])
def test_noise_free_variants_have_zero_std(variant, data):
    x, code = data
    torch.manual_seed(0)
    net = HQGNet(3, "tiny", variant=variant)
    r = enhance_samples(net, x, code=code, n=3, temperature=2.0)
    assert torch.equal(r.std, torch.zeros_like(r.std))     # exact: zeros by construction when noise-free
    torch.testing.assert_close(r.samples[1], net.enhance(x, code=code, temperature=2.0), rtol=0, atol=1e-6)


def test_other_architectures_fast_equals_reference():
    torch.manual_seed(0)
    for kw in (dict(gen_vnm_placement="bottleneck", gen_n_vnm=2), dict(gen_n_vnm=2), dict(gen_residual=False)):
        net = HQGNet(1, "tiny", **kw)
        x, code = torch.rand(2, 1, 19, 30), torch.randn(1, 64)
        a = enhance_samples(net, x, code=code, n=3, seed=1)
        b = enhance_samples(net, x, code=code, n=3, seed=1, fast=False)
        torch.testing.assert_close(a.samples, b.samples, rtol=0, atol=1e-5)
        assert a.std.max() > 1e-6                                   # ~2e-5 for the first, weakest net


def test_guidance_images_and_default_guidance(net, data):
    x, code = data
    hq = torch.rand(1, 3, 32, 32)
    a = enhance_samples(net, x, hq, n=2, seed=5)
    b = enhance_samples(net, x, code=net.encode_guidance(hq), n=2, seed=5)
    torch.testing.assert_close(a.samples, b.samples)
    with pytest.raises(ValueError, match="no guidance"):
        enhance_samples(HQGNet(3, "tiny"), x, n=2)


def test_shipped_model_sample_equals_enhance():
    model = HQGNet.from_checkpoint(repo_file("data_samples", "models", "fundus_tiny.pt"))
    x = read_image(list_images(repo_file("data_samples", "fundus", "lq"))[0])
    r = enhance_samples(model, x, n=3, temperature=1.0, seed=0)
    torch.testing.assert_close(r.samples[2], model.enhance(x, temperature=1.0, generator=sample_generator(0, 2)),
                               rtol=0, atol=1e-5)
    assert 1e-4 < float(uncertainty_score(r.std)) < 0.1


def test_sample_seeds():
    assert sample_seed(0, 1) == sample_seed(0, 1) != sample_seed(1, 0)
    assert len({sample_seed(s, k) for s in range(5) for k in range(10)}) == 50
    with pytest.raises(ValueError, match="seed: expected an int >= 0"):
        sample_seed(-2, 0)


def test_uncertainty_map_and_score():
    std = torch.zeros(2, 3, 16, 16); std[0, 0] = 0.3; std[1] = 0.06
    u = uncertainty_map(std)
    assert u.shape == (2, 1, 16, 16)
    torch.testing.assert_close(u[:, 0, 0, 0], torch.tensor([0.1, 0.06]))
    torch.testing.assert_close(uncertainty_score(std), torch.tensor([0.1, 0.06]))
    flat = torch.full((2, 3, 16, 16), 0.5)
    torch.testing.assert_close(uncertainty_map(std, flat, normalize=True), u / 0.02, rtol=1e-3, atol=1e-3)
    fov = torch.zeros(16, 16, dtype=torch.bool); fov[:4] = True
    torch.testing.assert_close(uncertainty_score(std, fov=fov), torch.tensor([0.1, 0.06]))
    stripes = torch.zeros(1, 1, 32, 32); stripes[..., ::2] = 1
    assert abs(float(local_contrast(stripes)[0, 0, 16, 16]) - 0.5) < 1e-3
    assert uncertainty_map(std[0]).shape == (1, 16, 16)


def test_bad_inputs(net, data):
    x, code = data
    cases = [(dict(n=0), "n: expected an int >= 1"), (dict(n=2.5), "n: expected an int"),
             (dict(temperature=-0.1), "temperature: expected a number >= 0"),
             (dict(temperature=float("nan")), "temperature: expected a number >= 0"),
             (dict(chunk=0), "chunk: expected an int >= 1"), (dict(seed=-1), "seed: expected an int >= 0")]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            enhance_samples(net, x, code=code, **kw)
    with pytest.raises(ValueError, match="x_lq: expected 3 channels"):
        enhance_samples(net, torch.rand(2, 1, 8, 8), code=code)
    with pytest.raises(ValueError, match="model: expected an HQGNet"):
        enhance_samples(net.gen, x, code=code)
    with pytest.raises(ValueError, match="either guidance"):
        enhance_samples(net, x, torch.rand(1, 3, 16, 16), code=code)
    with pytest.raises(ValueError, match="x: a reference image is needed"):
        uncertainty_map(torch.rand(1, 3, 8, 8), normalize=True)
    with pytest.raises(ValueError, match="std: expected standard deviations >= 0"):
        uncertainty_map(-torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="fov: no pixel inside"):
        uncertainty_score(torch.rand(1, 3, 8, 8), fov=torch.zeros(8, 8))


@pytest.mark.slow
def test_bench_uncertainty_shared_decoder_beats_per_sample():
    from hqg.app.speed import bench_uncertainty
    r = bench_uncertainty(n=8, size=256, repeats=3, verbose=False)
    assert r["ratio"] < r["reference_ratio"] and r["ratio"] < 8
