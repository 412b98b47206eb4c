"""hqg.model.vnm: KL term, AdaLIN, VariationalNorm sampling/temperature, VNMBlock, rho bounds, gradients."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hqg.model.vnm import AdaLIN, VariationalNorm, VNMBlock, kl_divergence


# --- KL ---------------------------------------------------------------------------------------------------------

def test_kl_zero_for_standard_normal():
    assert abs(kl_divergence(torch.zeros(5, 16), torch.zeros(5, 16)).item()) < 1e-6   # computed: a tolerance, not == 0


def test_kl_closed_form_by_hand():
    # mu = (1, 0), sigma^2 = (1, 4): 0.5 * [(1 + 1 - 1 - 0) + (0 + 4 - 1 - log 4)] = 2 - log 2
    kl = kl_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]]))
    assert kl.item() == pytest.approx(2 - math.log(2), abs=1e-6)
    # mu = (0.5,), sigma^2 = e^-1: 0.5 * (0.25 + e^-1 - 1 + 1)
    kl = kl_divergence(torch.tensor([[0.5]]), torch.tensor([[-1.0]]))
    assert kl.item() == pytest.approx(0.5 * (0.25 + math.exp(-1)), abs=1e-6)


def test_kl_positive_sums_dims_and_averages_batch():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    per_sample = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
    kl = kl_divergence(mu, logvar)
    assert kl.item() > 0
    assert kl.item() == pytest.approx(per_sample.mean().item(), rel=1e-6)
    assert kl_divergence(torch.full((1, 3), 1e-3), torch.zeros(1, 3)).item() > 0


def test_kl_shape_error():
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))


# --- AdaLIN -----------------------------------------------------------------------------------------------------

def test_adalin_ends_are_instance_and_layer_norm():
    x = torch.randn(2, 6, 9, 7) * 3 + 1
    one, zero = torch.ones(6), torch.zeros(6)
    y_in = AdaLIN(6, rho_init=1.0, learn_rho=False)(x, one, zero)
    y_ln = AdaLIN(6, rho_init=0.0, learn_rho=False)(x, one, zero)
    torch.testing.assert_close(y_in, F.instance_norm(x, eps=1e-5), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y_ln, F.layer_norm(x, x.shape[1:], eps=1e-5), atol=1e-5, rtol=1e-5)
    y_mid = AdaLIN(6, rho_init=0.25, learn_rho=False)(x, one, zero)
    torch.testing.assert_close(y_mid, 0.25 * y_in + 0.75 * y_ln, atol=1e-5, rtol=1e-5)


def test_adalin_scale_shift_per_channel_and_batch():
    x = torch.randn(2, 3, 5, 5)
    n = AdaLIN(3, rho_init=1.0, learn_rho=False)
    base = n(x, torch.ones(3), torch.zeros(3))
    gamma, beta = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]), torch.tensor([[0.0, 1.0, -1.0], [2.0, 2.0, 2.0]])
    y = n(x, gamma, beta)
    torch.testing.assert_close(y, base * gamma[:, :, None, None] + beta[:, :, None, None])
    assert n(x, gamma[:, :, None, None], beta[:, :, None, None]).shape == (2, 3, 5, 5)


def test_adalin_rho_init_and_errors():
    assert torch.allclose(AdaLIN(4).rho, torch.full((1, 4, 1, 1), 0.9))
    assert len(list(AdaLIN(4).parameters())) == 1
    assert len(list(AdaLIN(4, learn_rho=False).parameters())) == 0
    with pytest.raises(ValueError, match="rho_init"):
        AdaLIN(4, rho_init=-0.1)
    with pytest.raises(ValueError, match=r"x: expected \(B,4,H,W\)"):
        AdaLIN(4)(torch.rand(1, 4, 8), torch.ones(4), torch.zeros(4))
    with pytest.raises(ValueError, match="beta: expected shape"):
        AdaLIN(4)(torch.rand(1, 4, 8, 8), torch.ones(4), torch.zeros(5))


@pytest.mark.parametrize("opt_cls,lr,only_rho", [(torch.optim.Adam, 100.0, False), (torch.optim.SGD, 1e6, True)])
def test_rho_stays_in_unit_interval_after_large_steps(opt_cls, lr, only_rho):
    torch.manual_seed(0)
    blocks = nn.ModuleList([VNMBlock(4, latent=8) for _ in range(2)])
    params = [b.norm.rho_logit for b in blocks] if only_rho else blocks.parameters()
    opt = opt_cls(params, lr=lr)
    for sign in (1.0, -1.0, 1.0):
        h = torch.randn(2, 4, 6, 6) + torch.arange(4.0).view(1, 4, 1, 1)
        for b in blocks:
            h = b(h, torch.randn(2, 8))
        opt.zero_grad()
        (sign * h.mean()).backward()
        opt.step()
    rho = torch.cat([b.norm.rho.flatten() for b in blocks])
    assert torch.isfinite(rho).all()
    assert rho.min().item() >= 0.0 and rho.max().item() <= 1.0
    assert (rho - 0.9).abs().max().item() > 1e-3  # the steps did change rho


def test_adalin_gradcheck_float64():
    n = AdaLIN(3, rho_init=0.4).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, g, b: n(a, g, b), (x, gamma, beta))


# --- VariationalNorm ----------------------------------------------------------------------------------------------

@pytest.fixture
def codes():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 16, generator=g), torch.randn(3, 64, generator=g)


def test_temperature_zero_is_deterministic_mean(codes):
    vnm = VariationalNorm()
    w1, kl1 = vnm(*codes, temperature=0.0)
    w2, kl2 = vnm(*codes, temperature=0.0, generator=torch.Generator().manual_seed(9))
    mu, logvar = vnm.distribution(*codes)
    assert torch.equal(w1, w2)                                # exact: tau = 0 ignores the generator (same process)
    torch.testing.assert_close(w1, mu, rtol=0, atol=1e-6)
    assert w1.shape == (3, 64)
    assert kl1.item() == pytest.approx(kl_divergence(mu, logvar).item()) and kl1.item() == kl2.item()   # exact: same process


def test_temperature_positive_seeded(codes):
    vnm = VariationalNorm()
    draw = lambda s, t=1.0: vnm(*codes, temperature=t, generator=torch.Generator().manual_seed(s)).w
    assert torch.equal(draw(0), draw(0))                      # exact: same seed, same process (also below)
    assert (draw(0) - draw(1)).abs().max().item() > 1e-3
    mu = vnm.distribution(*codes)[0]
    # the noise scales linearly with tau for the same eps
    torch.testing.assert_close(draw(3, 2.0) - mu, 2 * (draw(3, 1.0) - mu), atol=1e-5, rtol=1e-5)
    # global RNG when no generator is given: reproducible through torch.manual_seed
    torch.manual_seed(5); a = vnm(*codes, 1.0).w
    torch.manual_seed(5); b = vnm(*codes, 1.0).w
    assert torch.equal(a, b)


def test_sampled_spread_matches_sigma(codes):
    vnm = VariationalNorm(latent=8)
    v_y, v_z = codes[0][:1].expand(4000, -1), codes[1][:1].expand(4000, -1)
    with torch.no_grad():
        w = vnm(v_y, v_z, temperature=0.5, generator=torch.Generator().manual_seed(0)).w
        mu, logvar = vnm.distribution(v_y[:1], v_z[:1])
    torch.testing.assert_close(w.std(0), 0.5 * torch.exp(0.5 * logvar[0]), rtol=0.06, atol=1e-4)
    torch.testing.assert_close(w.mean(0), mu[0], rtol=0, atol=0.05)


def test_deterministic_switch(codes):
    det = VariationalNorm(deterministic=True)
    w, kl = det(*codes, temperature=1.0, generator=torch.Generator().manual_seed(0))
    w2, _ = det(*codes, temperature=3.0)
    assert torch.equal(w, w2) and kl.item() == 0.0 and w.shape == (3, 64)   # exact: no sampling; kl is a constant zero
    assert det.distribution(*codes)[1] is None


def test_vnm_input_errors(codes):
    vnm = VariationalNorm()
    with pytest.raises(ValueError, match=r"v_y: expected a \(B,16\) code, got \(3, 8\)"):
        vnm(torch.zeros(3, 8), codes[1])
    with pytest.raises(ValueError, match="v_z: expected batch 1 or 3"):
        vnm(codes[0], torch.zeros(2, 64))
    with pytest.raises(ValueError, match="temperature"):
        vnm(*codes, temperature=-0.5)
    # batch-1 guidance broadcasts
    torch.testing.assert_close(vnm(codes[0], codes[1][:1], 0.0).w, vnm(codes[0], codes[1][:1].expand(3, -1), 0.0).w)


def test_logvar_is_clamped():
    vnm = VariationalNorm(latent=2)
    with torch.no_grad():
        vnm.mlp[-1].bias.copy_(torch.tensor([0.0, 0.0, 500.0, -500.0]))
    _, logvar = vnm.distribution(torch.zeros(1, 16), torch.zeros(1, 64))
    assert logvar.max().item() <= 20.0 and logvar.min().item() >= -30.0
    w, kl = vnm(torch.zeros(1, 16), torch.zeros(1, 64), 1.0)
    assert torch.isfinite(w).all() and torch.isfinite(kl)


# --- VNMBlock and gradients ---------------------------------------------------------------------------------------

def test_vnm_block_shape_residual_and_broadcast():
    torch.manual_seed(0)
    blk = VNMBlock(8, latent=16)
    x, w = torch.randn(2, 8, 10, 12), torch.randn(1, 16)
    out = blk(x, w)
    assert out.shape == (2, 8, 10, 12)
    torch.testing.assert_close(out, blk(x, w.expand(2, -1)))
    with torch.no_grad():
        blk.conv.weight.zero_(); blk.conv.bias.zero_()
    torch.testing.assert_close(blk(x, w), x, rtol=0, atol=1e-6)  # residual: a zero conv leaves x unchanged
    with pytest.raises(ValueError, match=r"w: expected a \(B,16\) code"):
        blk(x, torch.randn(2, 8))
    with pytest.raises(ValueError, match="norm: expected"):
        VNMBlock(8, norm="in")


@pytest.mark.parametrize("deterministic", [False, True])
def test_gradients_reach_every_parameter(deterministic):
    torch.manual_seed(0)
    vnm = VariationalNorm(deterministic=deterministic)
    blocks = nn.ModuleList([VNMBlock(8) for _ in range(4)])
    w, kl = vnm(torch.randn(2, 16), torch.randn(2, 64), temperature=1.0)
    h = torch.randn(2, 8, 8, 8)
    for b in blocks:
        h = b(h, w)
    (h.square().mean() + kl).backward()
    for name, p in list(vnm.named_parameters()) + list(blocks.named_parameters()):
        assert p.grad is not None, name
        assert p.grad.abs().sum().item() > 0, name
