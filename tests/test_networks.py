"""hqg.model.networks: guidance, generator, discriminator, segmenter, HQGNet enhance/checkpoints, sizes; slow overfit check."""
import math
import time

import pytest
import torch
import torch.nn.functional as F

from hqg.model.networks import (HQGNet, Generator, Discriminator, Segmenter, GuidanceEncoder, GuidanceAutoencoder,
                                pretrain_guidance_encoder, freeze, unfreeze, resolve_config, count_params,
                                estimate_macs, model_summary, RELEASED_PARAMS)
from hqg.app.speed import bench_generator

SMALL = dict(gen_base=8, disc_base=8, enc_base=8, seg_base=8)


def small_net(c=3, **kw):
    torch.manual_seed(0)
    return HQGNet(c, "tiny", **{**SMALL, **kw})


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# --- guidance ------------------------------------------------------------------------------------------------

def test_guidance_changes_output_and_same_guidance_repeats():
    net = small_net()
    x_lq, z1, z2 = rand(2, 3, 32, 32), rand(1, 3, 32, 32, seed=1), rand(1, 3, 32, 32, seed=2) ** 3
    y1, y1b, y2 = net.enhance(x_lq, z1), net.enhance(x_lq, z1), net.enhance(x_lq, z2)
    assert torch.equal(y1, y1b)   # exact: tau = 0 is deterministic (same process)
    assert (y1 - y2).abs().max().item() > 1e-3
    # a batch of B guidance images pairs with the B inputs; a batch of 1 broadcasts
    both = net.enhance(x_lq, torch.cat([z1, z2]))
    torch.testing.assert_close(both[0], y1[0]); torch.testing.assert_close(both[1], y2[1])


def test_code_blending_ends_reproduce_each_guidance():
    net = small_net()
    x_lq, z1, z2 = rand(2, 3, 32, 32), rand(1, 3, 32, 32, seed=1), rand(1, 3, 40, 24, seed=2) ** 2
    c1, c2 = net.encode_guidance(z1), net.encode_guidance(z2)
    assert c1.shape == (1, 64)
    blend = lambda a: net.enhance(x_lq, code=a * c1 + (1 - a) * c2)
    torch.testing.assert_close(blend(1.0), net.enhance(x_lq, z1), rtol=0, atol=1e-6)
    torch.testing.assert_close(blend(0.0), net.enhance(x_lq, z2), rtol=0, atol=1e-6)
    mid = blend(0.5)
    assert (mid - blend(1.0)).abs().max() > 1e-4 and (mid - blend(0.0)).abs().max() > 1e-4


def test_temperature_sampling_is_seeded():
    net = small_net()
    x_lq, z = rand(2, 3, 32, 32), rand(1, 3, 32, 32, seed=1)
    r = lambda s: net.enhance(x_lq, z, temperature=1.0, generator=torch.Generator().manual_seed(s))
    assert torch.equal(r(3), r(3))   # exact: same seed, same process (and tau = 0 below)
    assert (r(3) - r(4)).abs().max().item() > 1e-5
    assert torch.equal(net.enhance(x_lq, z, temperature=0.0, generator=torch.Generator().manual_seed(3)),
                       net.enhance(x_lq, z))


def test_default_guidance():
    net = small_net()
    x_lq = rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="set_default_guidance"):
        net.enhance(x_lq)
    assert not net.has_default_guidance
    hq = [rand(3, 32, 32, seed=1), rand(3, 24, 40, seed=2)]
    code = net.set_default_guidance(hq)
    expect = (net.encode_guidance(hq[0]) + net.encode_guidance(hq[1])) / 2
    torch.testing.assert_close(code, expect)
    assert net.has_default_guidance and "default_code" in net.state_dict()
    torch.testing.assert_close(net.enhance(x_lq), net.enhance(x_lq, code=expect), rtol=0, atol=1e-6)


def test_enhance_keeps_mode_no_grad_and_single_image():
    net = small_net().train()
    x_lq, z = rand(2, 3, 32, 32), rand(1, 3, 32, 32, seed=1)
    out = net.enhance(x_lq, z)
    assert not out.requires_grad
    assert (net.training, net.gen.training, net.disc.training, net.enc_hq.training) == (True, True, True, False)
    single = net.enhance(x_lq[0], z[0])
    assert single.shape == (3, 32, 32)
    torch.testing.assert_close(single, out[0])  # batch 1 vs 2: equal up to float rounding


@pytest.mark.parametrize("kwargs,match", [
    (dict(guidance="both"), "not both"),
    (dict(code=torch.zeros(2, 16)), r"code: expected \(64,\)"),
    (dict(code=torch.zeros(3, 64)), "expected batch 1 or 2"),
    (dict(code=torch.zeros(1, 64), temperature=-1.0), "temperature"),
])
def test_enhance_bad_input(kwargs, match):
    net = small_net()
    if kwargs.get("guidance") == "both":
        kwargs = dict(guidance=rand(1, 3, 32, 32), code=torch.zeros(1, 64))
    with pytest.raises(ValueError, match=match):
        net.enhance(rand(2, 3, 32, 32), **kwargs)


def test_enhance_wrong_channels():
    net = small_net(3)
    with pytest.raises(ValueError, match="x_lq: expected 3 channels"):
        net.enhance(rand(2, 1, 32, 32), code=torch.zeros(64))
    with pytest.raises(ValueError, match="guidance: expected 3 channels"):
        net.enhance(rand(2, 3, 32, 32), rand(1, 1, 32, 32))


# --- shapes and ranges -------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("hw", [(37, 50), (32, 32), (8, 13)])  # below min_size 8 enhance refuses (test_bad_input)
def test_output_shape_and_range(c, hw):
    net = small_net(c)
    x = rand(2, c, *hw)
    y = net.enhance(x, rand(1, c, 20, 20, seed=1))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.min().item() >= 0.0 and y.max().item() <= 1.0
    out = net(x, torch.randn(2, 64), temperature=1.0)
    assert out.x_enh.shape == x.shape and out.kl.ndim == 0 and out.kl.item() > 0


def test_default_tiny_net_without_arguments():
    torch.manual_seed(0)
    net = HQGNet(in_channels=3, size="tiny")
    assert net.cfg["gen_base"] == 16 and net.gen.widths == [16, 32, 64, 128] and net.gen.vnm_counts == [1, 1, 1, 1]
    x = rand(2, 3, 64, 64)
    assert net.enhance(x, rand(1, 3, 64, 64, seed=1)).shape == (2, 3, 64, 64)
    assert net.disc(x).shape == (2, 1, 8, 8)
    assert net.seg is None


def test_discriminator_patches_and_spectral_norm():
    torch.manual_seed(0)
    d = Discriminator(3, base=8, depth=3)
    assert d(rand(2, 3, 64, 64)).shape == (2, 1, 8, 8)
    assert d(rand(2, 3, 37, 50)).shape == (2, 1, 4, 6)
    d_sn = Discriminator(1, base=8, depth=2, spectral_norm=True)
    assert d_sn(rand(2, 1, 32, 32)).shape == (2, 1, 8, 8)
    assert sum("parametrizations" in k for k in d_sn.state_dict()) > 0
    with pytest.raises(ValueError, match="at least 8"):
        d(rand(1, 3, 7, 64))


def test_segmenter_and_guidance_encoder_any_size():
    torch.manual_seed(0)
    seg = Segmenter(1, base=8, depth=3)
    for hw in [(37, 50), (16, 16), (3, 5)]:
        assert seg(rand(2, 1, *hw)).shape == (2, 1, *hw)
    enc = GuidanceEncoder(3, base=8, depth=3)
    assert enc(rand(2, 3, 37, 50)).shape == (2, 64) and enc(rand(1, 3, 2, 2)).shape == (1, 64)
    ae = GuidanceAutoencoder(enc)
    rec = ae(rand(2, 3, 37, 50))
    assert rec.shape == (2, 3, 37, 50) and rec.min() >= 0 and rec.max() <= 1


def test_generator_variants_and_layout():
    torch.manual_seed(0)
    assert Generator(3, base=8, depth=4).vnm_counts == [0, 1, 1, 1, 1]
    assert Generator(3, base=8, depth=3, vnm_placement="bottleneck").vnm_counts == [4, 0, 0, 0]
    off = HQGNet(3, "tiny", variant="official", **SMALL)
    assert off.gen.vnm is None and off.gen.to_code is None and off.gen.vnm_counts == [0, 1, 1, 1]
    assert off(rand(2, 3, 32, 32), torch.randn(1, 64)).kl.item() == 0.0    # exact: a constant zero (no VNM)
    det = HQGNet(3, "tiny", variant="deterministic", **SMALL)
    assert det.gen.vnm.deterministic and det(rand(2, 3, 32, 32), torch.randn(2, 64)).kl.item() == 0.0
    assert HQGNet(3, "tiny", variant="hqg-official", **SMALL).cfg["gen_conditioning"] == "adain"


def test_config_errors():
    with pytest.raises(ValueError, match=r"unknown HQGNet setting\(s\) \['gen_widht'\]"):
        HQGNet(3, "tiny", gen_widht=8)
    with pytest.raises(ValueError, match="size: expected one of"):
        HQGNet(3, "large")
    with pytest.raises(ValueError, match="variant: expected one of"):
        HQGNet(3, "tiny", variant="cyclegan")
    with pytest.raises(ValueError, match="in_channels"):
        HQGNet(4)
    assert resolve_config("paper-wide")["gen_base"] == 64 and resolve_config("tiny")["gen_base"] == 16
    assert (resolve_config("paper")["gen_base"], resolve_config("paper")["gen_stem"]) == (32, "unshuffle")


# --- gradients ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["hqg", "deterministic", "official"])
def test_gradients_reach_every_generator_parameter(variant):
    net = small_net(variant=variant)
    x_lq = rand(2, 3, 32, 32)
    out = net(x_lq, net.encode_guidance(rand(1, 3, 32, 32, seed=1)), temperature=1.0)
    (F.l1_loss(out.x_enh, rand(2, 3, 32, 32, seed=2)) + 0.01 * out.kl).backward()
    missing = [n for n, p in net.gen.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
    assert all(p.grad is None for p in net.enc_hq.parameters()) and all(p.grad is None for p in net.disc.parameters())


def test_discriminator_and_unfrozen_encoder_get_gradients():
    net = small_net(freeze_guidance=False)
    assert all(p.requires_grad for p in net.enc_hq.parameters())
    net.disc(rand(2, 3, 32, 32)).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.disc.parameters())
    net.encode_guidance(rand(1, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in net.enc_hq.parameters())


def test_freeze_unfreeze_and_pretraining_restores_flags():
    torch.manual_seed(0)
    enc = freeze(GuidanceEncoder(1, base=8, depth=2))
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    before = [p.clone() for p in enc.parameters()]
    hq = F.interpolate(rand(6, 1, 8, 8), size=24, mode="bilinear", align_corners=False)
    hist = pretrain_guidance_encoder(enc, hq, steps=25, lr=3e-3, batch_size=3)
    assert len(hist) == 25 and all(math.isfinite(h) for h in hist)
    assert sum(hist[-5:]) / 5 < hist[0]
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, enc.parameters()))  # it did train
    assert unfreeze(enc).training and all(p.requires_grad for p in enc.parameters())


# --- checkpoints -------------------------------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path):
    net = small_net(1, with_seg=True, spectral_norm=True)
    x_lq, z = rand(2, 1, 37, 50), rand(1, 1, 32, 32, seed=1)
    net.set_default_guidance(z)
    p = net.save_checkpoint(tmp_path / "ck" / "net.pt")
    assert sorted(x.name for x in p.parent.iterdir()) == ["net.pt"]  # no temp file left behind
    ck = torch.load(p, weights_only=True)
    assert set(ck) == {"model", "model_config", "hqg_version"}
    assert ck["model_config"] == dict(in_channels=1, size="tiny", variant="hqg", with_seg=True,
                                      freeze_guidance=True, spectral_norm=True, **SMALL)
    net2 = HQGNet.from_checkpoint(p)
    # exact: the same weights loaded back give bitwise the same outputs on one machine
    assert torch.equal(net2.enhance(x_lq, z), net.enhance(x_lq, z))
    assert torch.equal(net2.enhance(x_lq), net.enhance(x_lq))
    g = lambda: torch.Generator().manual_seed(0)
    assert torch.equal(net2.enhance(x_lq, z, temperature=1.0, generator=g()),
                       net.enhance(x_lq, z, temperature=1.0, generator=g()))
    assert torch.equal(net2.disc(x_lq), net.disc(x_lq)) and torch.equal(net2.seg(x_lq), net.seg(x_lq))


def test_corrupt_and_foreign_checkpoints(tmp_path):
    net = small_net()
    p = net.save_checkpoint(tmp_path / "good.pt")
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(ValueError, match="trunc.pt: not a readable hqg checkpoint"):
        HQGNet.from_checkpoint(bad)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="text.pt"):
        HQGNet.from_checkpoint(tmp_path / "text.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match=r"foreign.pt: not an hqg model checkpoint.*'model'"):
        HQGNet.from_checkpoint(tmp_path / "foreign.pt")
    ck = net.checkpoint_dict()
    ck["model_config"] = dict(ck["model_config"], gen_base=16)
    torch.save(ck, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="mismatch.pt: checkpoint does not fit"):
        HQGNet.from_checkpoint(tmp_path / "mismatch.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        HQGNet.from_checkpoint(tmp_path / "nope.pt")



# --- black outside the field of view -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def retina_views():
    "A whole field-of-view view (black corners) and a crop inside the retina, both hazy over the whole frame."
    skdata = pytest.importorskip("skimage.data")
    from hqg.data.samples import make_view
    from hqg.data.degrade import degrade
    try:
        photo = torch.from_numpy(skdata.retina()).permute(2, 0, 1).float() / 255
    except Exception as e:
        pytest.skip(f"skimage retina not available: {e}")
    whole, crop = make_view(photo, 96, (0.5, 0.5), 1.0, 30), make_view(photo, 96, (0.5, 0.5), 0.5, 0)
    return whole, degrade(whole, "fundus", seed=2)[0], degrade(crop, "fundus", seed=2)[0]


def guided_net(c=3, **kw):
    net = small_net(c, **kw)
    net.set_default_guidance(rand(2, c, 32, 32, seed=1))
    return net


def test_enhance_fov_auto_blackens_the_border_and_leaves_crops_alone(retina_views):
    from hqg.data.degrade import estimate_fov
    clean, whole, crop = retina_views
    net = guided_net()
    inside = estimate_fov(clean)[0]                              # the FOV of the clean view
    assert whole[:, ~inside].mean() > 0.1                        # the hazy input's border is grey ...
    y_none, y_auto = net.enhance(whole, fov="none"), net.enhance(whole, fov="auto")
    assert y_none[:, ~inside].mean() > 0.05                      # ... and so is the plain output
    far = ~(F.max_pool2d(inside.float()[None], 5, 1, 2)[0] > 0)    # 2 px or more outside the FOV
    core = ~(F.max_pool2d((~inside).float()[None], 5, 1, 2)[0] > 0)  # 2 px or more inside it
    assert y_auto[:, far].abs().max() < 1e-6                      # black with fov="auto"
    assert (y_auto[:, ~inside].abs() < 1e-6).float().mean() > 0.9  # the rest: a ring within 2 px of the rim
    from hqg.data.degrade import fill_outside                   # the border is filled before the generator ...
    y_fill = net.enhance(fill_outside(whole[None], net.fov_mask(whole, "auto"))[0], fov="none")
    torch.testing.assert_close(y_auto[:, core], y_fill[:, core], rtol=0, atol=1e-6)
    assert (y_auto[:, core] - y_none[:, core]).abs().mean() > 1e-4  # ... which changes what its norms see
    torch.testing.assert_close(net.enhance(crop, fov="auto"), net.enhance(crop, fov="none"), rtol=0, atol=1e-6)
    both = net.enhance(torch.stack([whole, crop]), fov="auto")  # decided per image in a batch
    torch.testing.assert_close(both, torch.stack([y_auto, net.enhance(crop, fov="none")]), rtol=0, atol=1e-5)


def test_enhance_fov_mask_forms_agree_and_gray_auto_is_untouched():
    net = guided_net()
    x = rand(2, 3, 32, 32, seed=3)
    m = torch.zeros(32, 32, dtype=torch.bool); m[4:28, 6:30] = True
    ref = net.enhance(x, fov=m)
    assert ref[:, :, ~m].abs().max() < 1e-6 and ref[:, :, m].min() > 0
    for form in (m.float(), m[None], m[None, None].expand(2, 1, -1, -1), m[None, None].float() * 0.9):
        torch.testing.assert_close(net.enhance(x, fov=form), ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(net.enhance(x, fov=False), net.enhance(x, fov="none"), rtol=0, atol=1e-6)
    assert net.fov_mask(x) is None and net.fov_mask(x, "auto").all()   # random images: no border found
    g = guided_net(1)
    x1 = rand(1, 1, 32, 32, seed=4) * (m.float() + 0.01)
    torch.testing.assert_close(g.enhance(x1, fov="auto"), g.enhance(x1), rtol=0, atol=1e-6)  # gray: never masked


def test_fov_default_round_trips_through_checkpoints(tmp_path, retina_views):
    _, whole, _ = retina_views
    net = guided_net(fov="auto")
    assert net.fov == "auto" and net.model_config["fov"] == "auto"
    torch.testing.assert_close(net.enhance(whole), net.enhance(whole, fov="auto"), rtol=0, atol=1e-6)
    back = HQGNet.from_checkpoint(net.save_checkpoint(tmp_path / "auto.pt"))
    assert back.fov == "auto"
    torch.testing.assert_close(back.enhance(whole), net.enhance(whole), rtol=0, atol=1e-6)
    ck = torch.load(tmp_path / "auto.pt", weights_only=True)
    del ck["model_config"]["fov"]; torch.save(ck, tmp_path / "old.pt")       # written before the setting existed
    assert HQGNet.from_checkpoint(tmp_path / "old.pt").fov == "none"
    back.fov = "none"
    assert "fov" not in back.model_config                                   # configs from before compare equal
    assert HQGNet.from_checkpoint(back.save_checkpoint(tmp_path / "none.pt")).fov == "none"


@pytest.mark.parametrize("fov,match", [
    ("Auto", r"fov: expected None, 'auto', 'none', False or a mask tensor, got 'Auto'"),
    (True, r"got True"), (0.5, r"got 0.5"),
    (torch.ones(32, 31), r"fov: expected a mask .*got \(32, 31\)"),
    (torch.ones(3, 1, 32, 32), r"got \(3, 1, 32, 32\)"),
    (torch.ones(2, 3, 32, 32), r"got \(2, 3, 32, 32\)")])
def test_enhance_bad_fov_is_named(fov, match):
    net = guided_net()
    with pytest.raises(ValueError, match=match):
        net.enhance(rand(2, 3, 32, 32), fov=fov)


def test_bad_fov_setting_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"fov: expected one of \['auto', 'none'\], got 'black'"):
        HQGNet(3, fov="black", **SMALL)
    net = small_net()
    with pytest.raises(ValueError, match="got None"):
        net.fov = None
    ck = net.checkpoint_dict(); ck["model_config"]["fov"] = "always"; torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: checkpoint does not fit its model_config: fov: expected"):
        HQGNet.from_checkpoint(tmp_path / "bad.pt")


def test_enhance_samples_follows_the_fov_setting(retina_views):
    "hqg.eval.uncertainty.enhance_samples masks like `enhance`: its deterministic sample is the enhanced image."
    from hqg.eval.uncertainty import enhance_samples
    _, whole, _ = retina_views
    net = guided_net(fov="auto")
    smp = enhance_samples(net, whole, n=2, temperature=0.0)
    torch.testing.assert_close(smp.mean, net.enhance(whole), rtol=0, atol=1e-5)
    assert not torch.allclose(smp.mean, net.enhance(whole, fov="none"), atol=1e-3)
    assert enhance_samples(net, whole, n=3, temperature=1.0).std.shape == whole.shape

# --- sizes -------------------------------------------------------------------------------------------------

def test_count_params_and_macs_known_values():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    assert count_params(conv) == 4 * 3 * 9 + 4
    assert estimate_macs(conv, torch.rand(2, 3, 5, 5)) == 2 * 5 * 5 * 4 * 3 * 9
    seq = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 2))
    assert estimate_macs(seq, torch.rand(3, 6)) == 3 * (6 * 5 + 5 * 2)
    assert count_params(freeze(torch.nn.Linear(2, 2)), trainable_only=True) == 0


def test_model_summary_matches_real_build():
    s = model_summary("tiny", image_size=64, in_channels=1, verbose=False)
    net = HQGNet(1, "tiny", with_seg=True)
    for k in ("gen", "disc", "enc_hq", "seg"):
        assert s[k]["params"] == count_params(getattr(net, k)), k
    x = torch.rand(1, 1, 64, 64)
    assert s["gen"]["macs"] == estimate_macs(net.gen, x, torch.randn(1, 64), 0.0)
    assert s["disc"]["macs"] == estimate_macs(net.disc, x)
    p = model_summary("paper-wide", image_size=384, verbose=False)
    assert p["gen"]["params"] < RELEASED_PARAMS["gen"] and p["gen"]["macs"] > 50 * s["gen"]["macs"]
    assert model_summary(net, image_size=64, verbose=False) == s


@pytest.mark.slow
def test_bench_generator_tiny():
    r = bench_generator("tiny", batch=2, image_size=64, repeats=2, verbose=False)
    assert r["params"] == count_params(HQGNet(3, "tiny").gen)
    assert r["forward_ms"] > 0 and r["forward_backward_ms"] > r["forward_ms"] * 0.5


# --- convergence (slow) ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_hqgnet_overfits_one_pair():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x_hq = F.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=48, mode="bicubic", align_corners=False)
    x_hq = (0.8 * x_hq + 0.2 * torch.rand(1, 3, 48, 48, generator=g)).clamp(0, 1)  # smooth shapes + fine texture
    box = torch.ones(3, 1, 3, 3) / 9
    x_lq = 0.4 * F.conv2d(F.pad(x_hq, (1, 1, 1, 1), mode="reflect"), box, groups=3)  # dark and blurred ...
    x_lq = (x_lq + 0.05 * torch.randn(1, 3, 48, 48, generator=g)).clamp(0, 1)  # ... and noisy (about 9.5 dB)
    assert -10 * math.log10(F.mse_loss(x_lq, x_hq).item()) < 12
    net = HQGNet(3, "tiny")
    code = net.encode_guidance(x_hq).detach()
    opt = torch.optim.Adam(net.gen.parameters(), lr=2e-3)
    t0, psnr = time.perf_counter(), 0.0
    for step in range(1, 401):
        loss = F.l1_loss(net(x_lq, code, temperature=0.0).x_enh, x_hq)
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 25 == 0:
            psnr = -10 * math.log10(F.mse_loss(net.enhance(x_lq, code=code), x_hq).item())
            if psnr > 30:
                break
    print(f"overfit: PSNR {psnr:.1f} dB after {step} steps in {time.perf_counter() - t0:.1f} s")
    assert psnr > 30


# --- the space-to-depth stem (issue 17: the fast `paper` preset) ---
def test_unshuffle_stem_generator_any_size_near_identity_and_fast_decode():
    from hqg.model.blocks import pad_input
    torch.manual_seed(0)
    g = Generator(3, base=8, depth=2, stem="unshuffle")
    assert (g.stride, g.multiple, g.stem.in_channels, g.head.out_channels) == (2, 8, 12, 12)
    x, v = rand(2, 3, 37, 50), torch.randn(2, 64)
    out = g(x, v, 0.0)
    assert out.x_enh.shape == x.shape and 0 <= out.x_enh.min() and out.x_enh.max() <= 1
    assert (out.x_enh - x).abs().mean() < 0.05          # residual head: the untrained generator is near the identity
    xp, size = pad_input(x, g.multiple)
    with torch.no_grad(): feats, v_y = g.encode(xp)
    gen_of = lambda k: torch.Generator().manual_seed(k)
    with torch.no_grad():
        fast = g.decode_latents(feats, v_y, v, xp, 3, 1.0, gen_of, size=size)
        ref = g.decode_latents(feats, v_y, v, xp, 3, 1.0, gen_of, size=size, fast=False)
    assert fast.shape == (3, 2, 3, 37, 50)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)   # the shared decoder unfolds like decode
    with pytest.raises(ValueError, match="stem: expected one of"):
        Generator(3, base=8, depth=2, stem="pool")


@pytest.mark.parametrize("mode,c_head", [("shuffle-blur", 12), ("bilinear", 3)])
def test_unshuffle_head_up_modes_fast_decode_matches_reference(mode, c_head):
    from hqg.model.blocks import pad_input
    torch.manual_seed(0)
    g = Generator(3, base=8, depth=2, stem="unshuffle", head_up=mode)
    assert g.head.out_channels == c_head
    x, v = rand(2, 3, 37, 50), torch.randn(2, 64)
    xp, size = pad_input(x, g.multiple)
    with torch.no_grad():
        feats, v_y = g.encode(xp)
        gen_of = lambda k: torch.Generator().manual_seed(k)
        fast = g.decode_latents(feats, v_y, v, xp, 3, 1.0, gen_of, size=size)
        ref = g.decode_latents(feats, v_y, v, xp, 3, 1.0, gen_of, size=size, fast=False)
    assert fast.shape == (3, 2, 3, 37, 50)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)
    assert (g(x, v, 0.0).x_enh - x).abs().mean() < 0.05   # still near the identity untrained


def test_head_to_full_removes_the_checkerboard_and_checks_mode():
    from hqg.model.generator import head_to_full, binomial_blur
    phases = torch.tensor([1.0, -1.0, -1.0, 1.0]).repeat(3)[None, :, None, None].expand(1, 12, 8, 8)  # per 2x2 phase
    assert head_to_full(phases, 2, "shuffle").abs().min() == 1       # the sub-pixel head draws a 2-px checkerboard,
    assert head_to_full(phases, 2, "shuffle-blur").abs().max() < 1e-6   # which the blur removes
    const = torch.full((1, 3, 8, 8), 0.7)
    torch.testing.assert_close(binomial_blur(const), const)          # flat areas (and borders) are kept
    low = torch.randn(1, 12, 5, 6)
    torch.testing.assert_close(head_to_full(low, 2, "shuffle"), torch.nn.functional.pixel_shuffle(low, 2))
    assert head_to_full(low[:, :3], 2, "bilinear").shape == (1, 3, 10, 12)
    torch.testing.assert_close(head_to_full(low, 1, "bilinear"), low)   # stride 1: untouched
    with pytest.raises(ValueError, match="head_up: expected one of"):
        head_to_full(low, 2, "nearest")


def test_unshuffle_stem_discriminator_and_guidance_encoder():
    d = Discriminator(3, base=8, depth=2, stem="unshuffle")
    assert d(rand(2, 3, 32, 48)).shape == (2, 1, 4, 6)  # patches of 2^(depth+1) px
    assert d(rand(1, 3, 33, 35)).shape == (1, 1, 4, 4)  # odd sides: padded, then folded
    with pytest.raises(ValueError, match="at least 8"):
        d(rand(1, 3, 4, 32))
    e = GuidanceEncoder(3, base=8, depth=2, stem="unshuffle")
    assert e.multiple == 8 and e(rand(2, 3, 37, 50)).shape == (2, 64)
    assert [f.shape[-1] for f in e.features(rand(1, 3, 32, 32))] == [16, 8, 4]
    ae = GuidanceAutoencoder(e)
    assert ae(rand(2, 3, 37, 50)).shape == (2, 3, 37, 50)


def test_paper_is_the_fast_preset_and_paper_wide_the_full_resolution_one():
    with torch.device("meta"):
        fast, wide = HQGNet(3, "paper"), HQGNet(3, "paper-wide")
    assert (fast.gen.stride, fast.disc.stride, fast.enc_hq.stride, fast.min_size) == (2, 1, 1, 32)   # hqg 0.3: D, E_g full-res
    assert fast.gen.head_up == "shuffle-blur" and (fast.disc.widths[0], fast.enc_hq.widths[0]) == (16, 16)
    assert (wide.gen.stride, wide.disc.stride, wide.enc_hq.stride, wide.min_size) == (1, 1, 1, 16)
    s_fast = model_summary("paper", image_size=256, verbose=False)
    s_wide = model_summary("paper-wide", image_size=256, verbose=False)
    # measured figures (25b_app_speed): G 4.63 vs 60.93 GMACs, D 2.61 vs 29.66 at 256²
    assert s_fast["gen"]["macs"] < 0.1 * s_wide["gen"]["macs"] and s_fast["disc"]["macs"] < 0.1 * s_wide["disc"]["macs"]
    assert s_fast["gen"]["params"] < RELEASED_PARAMS["gen"] and s_wide["gen"]["params"] < RELEASED_PARAMS["gen"]


def test_checkpoints_of_the_old_paper_size_load_as_paper_wide(tmp_path):
    ov = dict(gen_base=8, gen_max_width=16, disc_base=8, disc_max_width=16, enc_base=8, enc_max_width=16, enc_depth=3,
              latent=8, vnm_hidden=8)
    net = HQGNet(3, "paper-wide", **ov)
    p = net.save_checkpoint(tmp_path / "old.pt")
    ck = torch.load(p, weights_only=True)
    ck["model_config"]["size"], ck["hqg_version"] = "paper", "0.1.0"   # as hqg 0.1 wrote it
    torch.save(ck, p)
    old = HQGNet.from_checkpoint(p)
    assert old.model_config["size"] == "paper-wide" and old.gen.stride == 1
    x, z = rand(1, 3, 32, 32), rand(1, 3, 64, 64, seed=1)
    torch.testing.assert_close(old.enhance(x, z), net.enhance(x, z), atol=1e-6, rtol=1e-5)
    ck["hqg_version"] = "0.2.0"                                         # a 0.2 `paper` file is the fast preset
    torch.save(ck, p)
    with pytest.raises(ValueError, match="does not fit its model_config"):
        HQGNet.from_checkpoint(p)


def test_checkpoints_of_the_0_2_paper_preset_load_with_its_architecture(tmp_path):
    from hqg.model.networks import PAPER_0_2
    ov = dict(gen_base=8, gen_max_width=16, disc_base=8, disc_max_width=16, enc_base=8, enc_max_width=16, enc_depth=3,
              latent=8, vnm_hidden=8)
    net = HQGNet(3, "paper", **{**PAPER_0_2, **ov})
    assert (net.gen.head_up, net.disc.stride, net.enc_hq.stride) == ("shuffle", 2, 2)
    p = net.save_checkpoint(tmp_path / "v02.pt")
    ck = torch.load(p, weights_only=True)
    for k in PAPER_0_2:
        if k not in ov: ck["model_config"].pop(k)                        # as hqg 0.2 wrote it: no such keys
    ck["hqg_version"] = "0.2.0"
    torch.save(ck, p)
    old = HQGNet.from_checkpoint(p)
    assert (old.gen.head_up, old.disc.stride, old.enc_hq.stride) == ("shuffle", 2, 2)
    x, z = rand(1, 3, 32, 32), rand(1, 3, 64, 64, seed=1)
    torch.testing.assert_close(old.enhance(x, z), net.enhance(x, z), atol=1e-6, rtol=1e-5)
    ck["hqg_version"] = "0.3.0"                                         # the same keys from 0.3: today's `paper`
    torch.save(ck, p)
    with pytest.raises(ValueError, match="does not fit its model_config"):
        HQGNet.from_checkpoint(p)
