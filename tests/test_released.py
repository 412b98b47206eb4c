"""hqg.model.released: the released-code-shaped networks (sizes on the meta device, shapes, ranges, domains), the shared
training step, and the speed benchmarks at tiny sizes."""
import pytest
import torch

from hqg.model.networks import HQGNet, RELEASED_PARAMS, count_params
from hqg.model.released import (ReleasedNet, ReleasedGenerator, ReleasedStyleEncoder, ReleasedDiscriminator,
                                ReleasedEncoder, AdaIN, AdaINUpBlock, HQ_DOMAIN, LQ_DOMAIN, released_params,
                                make_optimizers, equivalent_train_step)
from hqg.app.speed import bench_released, bench_hqg, compare_speed

# exact counts of our reconstruction (their tolerance against the released counts is tested below)
EXPECTED = {"gen": 36_824_051, "enc_hq": 26_159_808, "disc": 26_095_170}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ReleasedNet()


def test_param_counts_within_3_percent_of_released():
    counts = released_params()
    assert counts == EXPECTED
    for k, v in counts.items():
        assert abs(v / RELEASED_PARAMS[k] - 1) < 0.03, (k, v)


def test_encoder_is_resnet50_sized_and_shaped():
    with torch.device("meta"):
        enc = ReleasedEncoder()
        feats = enc(torch.empty(1, 3, 384, 384))
    assert count_params(enc) == 23_508_032
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 192, 192), (256, 96, 96), (512, 48, 48), (1024, 24, 24),
                                                   (2048, 12, 12)]


@pytest.mark.parametrize("size", [384, 352, 96])
def test_meta_shapes_at_multiples_of_32(size):
    with torch.device("meta"):
        n = ReleasedNet()
        x = torch.empty(1, 3, size, size)
        assert n.gen(x, torch.empty(1, 64)).shape == (1, 3, size, size)
        assert n.enc_hq(x).shape == (1, 64)
        assert n.disc(x).shape == (1,)


def test_gray_counts_differ_only_in_the_first_and_last_layers():
    g1 = released_params(1)
    assert EXPECTED["gen"] - g1["gen"] == 2 * 64 * 49 + (16 * 9 * 2 + 2)
    assert EXPECTED["disc"] - g1["disc"] == EXPECTED["enc_hq"] - g1["enc_hq"] == 2 * 64 * 9


def test_generator_forward_shapes_range_and_style_dependence(net):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    s1, s2 = torch.randn(2, 64), torch.randn(2, 64)
    net.gen.eval()
    with torch.no_grad():
        y1, y2 = net.gen(x, s1), net.gen(x, s2)
        y_odd = net.gen(torch.rand(1, 3, 50, 70), s1[:1])
    net.gen.train()
    assert y1.shape == (2, 3, 64, 64) and y_odd.shape == (1, 3, 50, 70)
    assert 0 <= y1.min() and y1.max() <= 1
    assert (y1 - y2).abs().max() > 1e-4  # the style code drives the decoder


def test_style_code_shape_and_domains(net):
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        hq, lq = net.enc_hq(x, HQ_DOMAIN), net.enc_hq(x, LQ_DOMAIN)
        mixed = net.enc_hq(x, torch.tensor([0, 1, 0]))
        logits = net.disc(x, torch.tensor([1, 1, 0]))
    assert hq.shape == (3, 64) and logits.shape == (3,)
    torch.testing.assert_close(mixed, torch.stack([lq[0], hq[1], lq[2]]))
    assert not torch.allclose(hq, lq)


def test_bad_inputs(net):
    with pytest.raises(ValueError, match=r"style: expected a \(B or 1, 64\)"):
        net.gen(torch.rand(2, 3, 64, 64), torch.randn(2, 32))
    with pytest.raises(ValueError, match="x_lq: expected 3 channels"):
        net.gen(torch.rand(1, 1, 64, 64), torch.randn(1, 64))
    with pytest.raises(ValueError, match=r"domain: expected an int in \[0, 2\)"):
        net.disc(torch.rand(1, 3, 64, 64), 5)
    with pytest.raises(ValueError, match="domain: expected a \\(2,\\) integer tensor"):
        net.enc_hq(torch.rand(2, 3, 64, 64), torch.tensor([0]))
    with pytest.raises(ValueError, match="in_channels: expected 1 or 3"):
        ReleasedNet(2)
    with pytest.raises(ValueError, match="skip_widths: expected 5 widths"):
        ReleasedGenerator(skip_widths=(64,))


def test_adain_zero_map_is_instance_norm_and_block_upsamples():
    a = AdaIN(4, 8)
    torch.nn.init.zeros_(a.fc.weight); torch.nn.init.zeros_(a.fc.bias)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(a(x, torch.randn(2, 8)), torch.nn.functional.instance_norm(x))
    assert AdaINUpBlock(4, 3, 8)(x, torch.randn(1, 8)).shape == (2, 3, 12, 12)


def _snapshot(net):
    return {k: [p.detach().clone() for p in getattr(net, k).parameters()] for k in ("gen", "enc_hq", "disc")}


def _changed(net, before):
    return {k: any(not torch.equal(a, b) for a, b in zip(v, getattr(net, k).parameters())) for k, v in before.items()}


def test_equivalent_train_step_updates_gen_and_disc_only(net):
    before = _snapshot(net)
    opt_g, opt_d = make_optimizers(net)
    g = torch.Generator().manual_seed(2)
    losses = equivalent_train_step(net, opt_g, opt_d, torch.rand(1, 3, 64, 64, generator=g),
                                   torch.rand(1, 3, 64, 64, generator=g))
    assert sorted(losses) == ["loss_d", "loss_g"]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses["loss_d"] > 0 and losses["loss_g"] > 0
    assert _changed(net, before) == {"gen": True, "enc_hq": False, "disc": True}
    assert all(p.grad is None for p in net.parameters())  # gradients are freed after the step
    assert all(p.requires_grad for p in net.disc.parameters())  # D is unfrozen again


def test_equivalent_train_step_on_hqg_tiny():
    torch.manual_seed(0)
    hqg = HQGNet(3, "tiny", gen_base=8, disc_base=8, enc_base=8)
    before = _snapshot(hqg)
    opt_g, opt_d = make_optimizers(hqg)
    equivalent_train_step(hqg, opt_g, opt_d, torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert _changed(hqg, before) == {"gen": True, "enc_hq": False, "disc": True}
    with pytest.raises(ValueError, match="net: expected a ReleasedNet or an HQGNet"):
        equivalent_train_step(torch.nn.Linear(2, 2), opt_g, opt_d, None, None)


def test_bench_hqg_tiny_and_compare_speed_table(capsys):
    r = bench_hqg("tiny", image_size=32, repeats=1, verbose=False)
    assert r["name"] == "hqg tiny" and r["gen_params"] == count_params(HQGNet(3, "tiny").gen)
    assert 0 < r["forward_ms"] < r["train_step_ms"]
    assert r["gen_gmacs"] > 0 and r["train_step_peak_mb"] >= 0
    with pytest.raises(ValueError, match="image_size: expected an int >= 1"):
        compare_speed(image_size=0)
    with pytest.raises(ValueError, match="batch: expected an int >= 1"):
        bench_released(batch=0)


def test_bench_released_small(capsys):
    r = bench_released(image_size=64, repeats=1)
    out = capsys.readouterr().out
    assert out.startswith("released on cpu: batch 1, 64px, G 36.82 M params")
    assert r["gen_params"] == EXPECTED["gen"] and r["disc_params"] == EXPECTED["disc"]
    assert 0 < r["forward_ms"] < r["forward_backward_ms"] < r["train_step_ms"]
    # ResNet-50 at 64 px: ~ (64/224)^2 * 4.1 GMACs for the encoder alone
    assert 0.3 < r["gen_gmacs"] < 2.0
    assert r["train_step_peak_mb"] > 0


@pytest.mark.slow
def test_compare_speed_runs_all_rows(capsys):
    rows = compare_speed(image_size=64, repeats=1, presets=("tiny",))
    assert [r["name"] for r in rows] == ["hqg tiny", "released"]
    assert "| model | G params (M)" in capsys.readouterr().out
