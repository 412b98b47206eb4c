"""hqg.eval.classical: classical enhancers (values, colour, FOV, errors) and CycleGANTrainer (step isolation, loss terms
by hand, logs/samples/validation, checkpoints + bit-exact resume, inference without guidance, clear errors)."""
import csv, json, math
from pathlib import Path

import kornia
import pytest
import torch
import torch.nn.functional as F

from hqg.eval.classical import CLASSICAL, auto_gamma, clahe, enhance_classical, gamma_correction, identity
from hqg.train.cyclegan import BASELINE_LOSSES, CycleGANTrainer, CycleOutputs, baseline_loss
from hqg.core import convert_channels
from hqg.data import PairedTestSet, UnpairedDataset
from hqg.data.io import read_image
from hqg.model.losses import HQGLoss, illumination_loss, structure_loss
from hqg.model.networks import HQGNet
from hqg.train.loop import NonFiniteLossError, load_checkpoint
from hqg.train.hqg import Trainer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data_samples" / "fundus"
CCM = ROOT / "data_samples" / "ccm"
TINY = dict(gen_base=8, gen_max_width=32, disc_base=8, disc_max_width=32, enc_base=8, enc_depth=3,
            enc_max_width=32, latent=16, vnm_hidden=32)


def states(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def equal(a, b):  # exact: step isolation and bitwise resume on one machine are the contracts
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def make(run_dir, method="stillgan", channels=3, net_seed=0, data=DATA, loss_kw=None, **kw):
    torch.manual_seed(net_seed)
    kw = {"batch_size": 2, "log_every": 1, "sample_every": 0, "ckpt_every": 0, "progress": False, "r1_gamma": 0.0, **kw}
    loss = baseline_loss(method, illum_patch_sizes=(8, 16), **(loss_kw or {}))
    return CycleGANTrainer(HQGNet(channels, "tiny", **TINY), loss, UnpairedDataset(data, size=32, channels=channels),
                           run_dir=run_dir, **kw)


def first_batch(tr):
    b = next(iter(tr.loader))
    return b["lq"], b["hq"]


# ---------------------------------------------------------------- classical enhancers

@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (2, 3, 16, 16), (3, 16, 16)])
def test_identity_is_an_exact_copy(shape):
    x = torch.rand(shape)
    y = identity(x)
    assert torch.equal(y, x) and y is not x and y.dtype == x.dtype   # exact: a copy
    assert torch.equal(identity(x, mask=torch.ones(16, 16, dtype=torch.bool)), x)


@pytest.mark.parametrize("channels", [1, 3])
def test_auto_gamma_maps_the_mean_luminance_to_one_half(channels):
    x = torch.tensor([0.0, 0.2, 0.5]).view(3, 1, 1, 1) + torch.rand(3, channels, 24, 20) * torch.tensor([0.3, 0.6, 0.5]).view(3, 1, 1, 1)  # dark, mid, bright
    g = auto_gamma(x)
    mu = convert_channels(x, 1).mean((1, 2, 3))
    torch.testing.assert_close(mu ** g, torch.full((3,), 0.5))
    torch.testing.assert_close(g, math.log(0.5) / torch.log(mu))
    assert g[0] < 1 < g[2]                                           # dark brightened, bright darkened
    y = gamma_correction(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
    torch.testing.assert_close(y, x ** g.view(3, 1, 1, 1))
    means = convert_channels(y, 1).mean((1, 2, 3))                   # moved towards 0.5 from both sides
    assert means[0] > mu[0] and means[2] < mu[2]
    torch.testing.assert_close(gamma_correction(torch.full((1, channels, 4, 4), 0.3)), torch.full((1, channels, 4, 4), 0.5))


def test_gamma_explicit_fov_and_edge_cases():
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(gamma_correction(x, 2.0), x ** 2.0, rtol=0, atol=1e-6)
    torch.testing.assert_close(gamma_correction(x, 1), x, rtol=0, atol=1e-6)
    assert gamma_correction(x[0]).shape == (3, 8, 8) and auto_gamma(x[0]).shape == ()
    assert gamma_correction(x.double()).dtype == torch.float64
    im = torch.full((1, 1, 6, 6), 0.9)
    im[..., 2:4, 2:4] = 0.2
    fov = torch.zeros(6, 6, dtype=torch.bool)
    fov[2:4, 2:4] = True
    out = gamma_correction(im, mask=fov)
    torch.testing.assert_close(out[..., 2:4, 2:4], torch.full((1, 1, 2, 2), 0.5))    # statistics inside the FOV
    assert torch.equal(out[..., 0, :], im[..., 0, :])                              # outside: unchanged (exact: copied)
    for black in (torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4)):
        assert torch.isfinite(gamma_correction(black)).all()
    torch.testing.assert_close(gamma_correction(torch.zeros(1, 1, 4, 4)), torch.zeros(1, 1, 4, 4), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad, msg", [(0, "gamma: expected a finite number > 0"), (-2.0, "gamma: expected"),
                                      (math.inf, "gamma: expected"), (True, "gamma: expected"), ("2", "gamma: expected")])
def test_gamma_bad_values(bad, msg):
    with pytest.raises(ValueError, match=msg):
        gamma_correction(torch.rand(1, 1, 4, 4), bad)


def test_clahe_rgb_keeps_chroma_and_raises_contrast():
    ds = UnpairedDataset(DATA, size=64)
    x = torch.stack([ds[i]["lq"] for i in range(3)])
    y = clahe(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
    lab_x, lab_y = kornia.color.rgb_to_lab(x), kornia.color.rgb_to_lab(y)
    shift = (lab_y[:, 1:] - lab_x[:, 1:]).abs()
    assert shift.mean() < 0.25 and torch.quantile(shift.flatten(), 0.99) < 2.0       # a*, b* kept (Lab units)
    assert (lab_y[:, 0].flatten(1).std(1) > lab_x[:, 0].flatten(1).std(1)).all()       # more lightness contrast
    naive = kornia.enhance.equalize_clahe(x, 2.0, (8, 8))                              # per-channel CLAHE
    assert (kornia.color.rgb_to_lab(naive)[:, 1:] - lab_x[:, 1:]).abs().mean() > 3 * shift.mean()
    coarse = clahe(x, grid=(2, 2))                                    # 32x32 tiles: the clip limit matters
    assert (clahe(x, clip_limit=4.0, grid=(2, 2)) - coarse).abs().max() > 1e-2 and (coarse - y).abs().max() > 1e-2


def test_clahe_gray_shapes_dtypes_and_fov():
    g = torch.rand(2, 1, 40, 36) * 0.2 + 0.4
    y = clahe(g)
    torch.testing.assert_close(y, kornia.enhance.equalize_clahe(g, 2.0, (8, 8)))
    assert (y.flatten(1).std(1) > g.flatten(1).std(1)).all()
    assert clahe(g[0], grid=(4, 4)).shape == (1, 40, 36)
    assert clahe(g.double()).dtype == torch.float64
    fov = torch.zeros(2, 1, 40, 36, dtype=torch.bool)
    fov[..., 10:30, 5:30] = True
    ym = clahe(g, mask=fov)
    assert torch.equal(ym[~fov], g[~fov])                                              # exact: copied outside the mask
    torch.testing.assert_close(ym[fov], y[fov], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kw, msg", [(dict(clip_limit=-1.0), "clip_limit: expected a number >= 0"),
                                     (dict(grid=8), "grid: expected two tile counts"),
                                     (dict(grid=(8, 0)), "grid: expected two tile counts"),
                                     (dict(grid=(20, 4)), r"needs H > 20 and W > 4, got shape \(1, 1, 16, 16\)")])
def test_clahe_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        clahe(torch.rand(1, 1, 16, 16), **kw)


def test_registry_and_contract_errors():
    assert sorted(CLASSICAL) == ["clahe", "color-transfer", "gamma", "identity"]
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(enhance_classical("gamma", x, gamma=0.5), gamma_correction(x, 0.5), rtol=0, atol=1e-6)
    torch.testing.assert_close(enhance_classical("clahe", x, grid=(4, 4)), clahe(x, grid=(4, 4)), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"unknown classical enhancer 'hist'; expected one of \['clahe', 'color-transfer', 'gamma', 'identity'\]"):
        enhance_classical("hist", x)
    with pytest.raises(ValueError, match=r"gamma: unknown setting\(s\) \['clip_limit'\]; valid: \['gamma', 'mask'\]"):
        enhance_classical("gamma", x, clip_limit=2.0)
    for name, fn in CLASSICAL.items():
        kw = {"reference": torch.rand(3, 8, 8)} if name == "color-transfer" else {}  # the one that needs a reference
        with pytest.raises(ValueError, match=r"expected 1 or 3 channels"):
            fn(torch.rand(1, 2, 16, 16), **kw)
        with pytest.raises(ValueError, match=r"expected shape"):
            fn(torch.rand(16, 16), **kw)
    with pytest.raises(ValueError, match=r"mask: expected shape"):
        clahe(x, mask=torch.ones(1, 1, 8, 8))


# ---------------------------------------------------------------- CycleGAN: steps and loss terms

def test_baseline_losses():
    assert set(BASELINE_LOSSES) == {"cyclegan", "stillgan"}
    c, s = baseline_loss("cyclegan"), baseline_loss("stillgan", lambda_struct=2.0)
    assert c.gan_kind == "lsgan" and {k for k, w in c.weights.items() if w} == {"adv"}
    assert {k: w for k, w in s.weights.items() if w} == {"adv": 1.0, "struct": 2.0, "illum": 1.0}
    with pytest.raises(ValueError, match="method: expected one of"):
        baseline_loss("pix2pix")


def test_d_step_and_g_step_change_only_their_own_networks(tmp_path):
    tr = make(tmp_path, r1_gamma=1.0)
    x_lq, x_hq = first_batch(tr)
    g0, f0, d0, dl0, e0, ema0 = (states(m) for m in (tr.gen, tr.gen_lq, tr.disc, tr.disc_lq, tr.enc, tr.gen_ema))
    fakes = tr.generate(x_lq, x_hq)
    assert isinstance(fakes, CycleOutputs) and fakes.x_enh.shape == fakes.x_deg.shape == (2, 3, 32, 32)
    d = tr.d_step(x_lq, x_hq, fakes)
    assert equal(states(tr.gen), g0) and equal(states(tr.gen_lq), f0) and equal(states(tr.gen_ema), ema0)
    assert not equal(states(tr.disc), d0) and not equal(states(tr.disc_lq), dl0)
    assert all(p.grad is None for m in (tr.gen, tr.gen_lq) for p in m.parameters())
    assert d["d_r1"] > 0 and d["d_r1_lq"] > 0
    torch.testing.assert_close(d["d_total"], d["d_adv"] + d["d_adv_lq"] + 0.5 * (d["d_r1"] + d["d_r1_lq"]))
    d1, dl1 = states(tr.disc), states(tr.disc_lq)
    tr.g_step(x_lq, x_hq, fakes)
    assert equal(states(tr.disc), d1) and equal(states(tr.disc_lq), dl1)
    assert all(p.grad is None for m in (tr.disc, tr.disc_lq) for p in m.parameters())
    assert all(p.requires_grad for m in (tr.disc, tr.disc_lq) for p in m.parameters()) and tr.disc.training and tr.disc_lq.training
    assert not equal(states(tr.gen), g0) and not equal(states(tr.gen_lq), f0)
    assert equal(states(tr.enc), e0)                                  # E_g: never trained


def test_generator_terms_equal_a_hand_computation(tmp_path):
    tr = make(tmp_path, lambda_cycle=3.0, lambda_idt=0.5, loss_kw=dict(lambda_adv=0.7, lambda_struct=2.0, lambda_illum=0.3))
    x_lq, x_hq = first_batch(tr)
    fakes = tr.generate(x_lq, x_hq)
    tr.d_step(x_lq, x_hq, fakes)
    z = torch.zeros(1, tr.net.code_dim)
    G = lambda x: tr.gen(x, z, 0.0).x_enh
    Fb = lambda x: tr.gen_lq(x, z, 0.0).x_enh
    with torch.no_grad():
        x_enh, x_deg = G(x_lq), Fb(x_hq)
        torch.testing.assert_close(fakes.x_enh, x_enh)
        torch.testing.assert_close(fakes.x_deg, x_deg)
        want = {"g_adv": (tr.disc(x_enh) - 1).pow(2).mean(), "g_adv_lq": (tr.disc_lq(x_deg) - 1).pow(2).mean(),  # LSGAN
                "g_cycle": (Fb(x_enh) - x_lq).abs().mean() + (G(x_deg) - x_hq).abs().mean(),
                "g_idt": (G(x_hq) - x_hq).abs().mean() + (Fb(x_lq) - x_lq).abs().mean(),
                "g_struct": structure_loss(x_lq, x_enh) + structure_loss(x_hq, x_deg),
                "g_illum": illumination_loss(x_enh, (8, 16))}
    want["g_total"] = (0.7 * (want["g_adv"] + want["g_adv_lq"]) + 3.0 * want["g_cycle"] + 0.5 * want["g_idt"]
                       + 2.0 * want["g_struct"] + 0.3 * want["g_illum"])
    got = tr.g_step(x_lq, x_hq, fakes)
    assert list(got) == list(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7, msg=k)
    assert got["g_cycle"] > 0 and got["g_idt"] > 0


def test_plain_cyclegan_without_identity_logs_zero_terms(tmp_path):
    tr = make(tmp_path, method="cyclegan", lambda_idt=0.0)
    calls = []
    tr.gen_lq.register_forward_hook(lambda m, i, o: calls.append(1))
    x_lq, x_hq = first_batch(tr)
    fakes = tr.generate(x_lq, x_hq)
    tr.d_step(x_lq, x_hq, fakes)
    calls.clear()
    g = tr.g_step(x_lq, x_hq, fakes)
    assert len(calls) == 1                                            # F only for the cycle, no identity pass
    assert g["g_idt"] == 0 and g["g_struct"] == 0 and g["g_illum"] == 0     # exact: disabled terms are logged as a constant zero
    torch.testing.assert_close(g["g_total"], g["g_adv"] + g["g_adv_lq"] + 10 * g["g_cycle"])


@pytest.mark.parametrize("variant", ["deterministic", "official"])
def test_other_generator_variants_train(tmp_path, variant):
    torch.manual_seed(0)
    tr = CycleGANTrainer(HQGNet(3, "tiny", variant, **TINY), baseline_loss(), UnpairedDataset(DATA, size=32),
                         run_dir=tmp_path, batch_size=2, progress=False, sample_every=0)
    g0 = states(tr.gen_lq)
    row = tr.fit(1)
    assert math.isfinite(row["g_total"]) and not equal(states(tr.gen_lq), g0)
    assert HQGNet.from_checkpoint(tmp_path / "checkpoints" / "last.pt").enhance(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_gray_images_train(tmp_path):
    tr = make(tmp_path, channels=1, data=CCM)
    row = tr.fit(1)
    assert tr.gen_lq.in_channels == 1 and all(math.isfinite(row[k]) for k in ("g_total", "d_total", "g_cycle"))


# ---------------------------------------------------------------- logs, checkpoints, resume, inference

def test_logs_samples_validation_and_checkpoint_model(tmp_path):
    val = PairedTestSet(DATA, size=32)
    tr = make(tmp_path, sample_every=2, n_samples=2, val_set=val, max_steps=2)
    assert torch.equal(tr.net.default_code, torch.zeros(1, tr.net.code_dim)) and tr._user_guidance
    final = tr.fit()
    with open(tmp_path / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    cols = ["step", "epoch", "d_adv", "d_adv_lq", "d_r1", "d_r1_lq", "d_total", "g_adv", "g_adv_lq", "g_cycle", "g_idt",
            "g_struct", "g_illum", "g_total", "lr_g", "lr_d", "s_per_step", "val_psnr", "val_psnr_lq", "val_ssim", "val_ssim_lq"]
    assert list(table[0]) == cols and [int(r["step"]) for r in table] == [1, 2]
    assert float(table[1]["g_struct"]) > 0 and float(table[1]["g_illum"]) > 0 and table[0]["val_psnr"] == ""
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert final == rows[-1] and math.isfinite(final["val_psnr"])
    grid = read_image(tmp_path / "samples" / "step_000002.png")
    assert grid.shape == (3, 2 * 32 + 2, 4 * 32 + 3 * 2)             # LQ | G_ema(LQ) | HQ | F(HQ)
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    ts = ck["train_state"]
    assert ts["method"] == "cyclegan" and {"gen_lq", "disc_lq"} <= set(ts)
    assert len(ts["opt_g"]["param_groups"]) == 2 and len(ts["opt_d"]["param_groups"]) == 2
    assert len(ts["opt_g"]["state"]) > len(list(tr.gen.parameters()))          # moments of G and F
    assert ts["settings"]["temperature"] == 0.0 and ts["settings"]["lambda_cycle"] == 10.0
    net = HQGNet.from_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert net.has_default_guidance and torch.equal(net.default_code, torch.zeros(1, net.code_dim))
    x = val[0]["lq"]
    y = net.enhance(x)                                                 # no guidance argument
    want = tr.gen_ema(x[None], torch.zeros(1, net.code_dim), 0.0).x_enh[0]
    torch.testing.assert_close(y, want)
    assert equal(states(net.gen), states(tr.gen_ema))


@pytest.mark.parametrize("case", ["1_then_3", "kill_at_2_of_4_with_decay"])
def test_exact_resume_is_bitwise(tmp_path, case):
    if case == "1_then_3":
        straight = make(tmp_path / "a")
        straight.fit(3)
        first = make(tmp_path / "b")
        first.fit(1)
        ckpt, total, decay = tmp_path / "b" / "checkpoints" / "last.pt", 3, None
    else:   # crosses an epoch boundary (4 batches per epoch) and a learning-rate decay
        straight = make(tmp_path / "a", max_steps=5, lr_decay_start=1, ckpt_every=2)
        straight.fit()
        ckpt, total, decay = tmp_path / "a" / "checkpoints" / "step_000002.pt", None, 1
    resumed = make(tmp_path / "c", net_seed=99, max_steps=5, lr_decay_start=decay)
    assert not equal(states(resumed.gen_lq), states(straight.gen_lq))
    resumed.load_state(ckpt)
    assert resumed.last_checkpoint == ckpt
    resumed.fit(total)
    assert resumed.step == straight.step and resumed.epoch == straight.epoch
    for m in ("gen", "gen_lq", "disc", "disc_lq", "gen_ema", "enc"):
        assert equal(states(getattr(resumed, m)), states(getattr(straight, m))), m
    for a, b in ((resumed.opt_g, straight.opt_g), (resumed.opt_d, straight.opt_d)):
        sa, sb = a.state_dict()["state"], b.state_dict()["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


# ---------------------------------------------------------------- errors

def test_bad_settings_name_the_argument(tmp_path):
    ds = UnpairedDataset(DATA, size=32)
    net = HQGNet(3, "tiny", **TINY)
    cases = [(dict(loss=HQGLoss()), r"loss: \{'lambda_wavelet': 10.0, 'lambda_feat': 1.0, 'lambda_cons': 1.0, "
                                    r"'lambda_kl': 0.01\} are HQG-Net terms"),
             (dict(loss=baseline_loss(lambda_seg=1.0)), r"'lambda_seg': 1.0\} are HQG-Net terms"),
             (dict(loss=torch.nn.L1Loss()), "loss: expected an HQGLoss, got L1Loss"),
             (dict(net=net.gen), "net: expected an HQGNet, got Generator"),
             (dict(lambda_cycle=-1.0), "lambda_cycle: expected a finite number >= 0"),
             (dict(lambda_idt=math.nan), "lambda_idt: expected a finite number >= 0"),
             (dict(lambda_cycle=True), "lambda_cycle: expected"),
             (dict(finetune_guidance=True), "finetune_guidance: the CycleGAN baseline uses no guidance encoder"),
             (dict(lr_g=0), "lr_g: expected a learning rate > 0")]                # the base Trainer's checks still apply
    for kw, msg in cases:
        args = {"net": net, "loss": baseline_loss(), **kw}
        with pytest.raises(ValueError, match=msg):
            CycleGANTrainer(args.pop("net"), args.pop("loss"), ds, run_dir=tmp_path, **args)


def test_resume_across_trainers_is_a_clear_error(tmp_path):
    torch.manual_seed(0)
    base = Trainer(HQGNet(3, "tiny", **TINY), HQGLoss(), UnpairedDataset(DATA, size=32), run_dir=tmp_path / "hqg",
                   batch_size=2, progress=False, sample_every=0)
    base.fit(1)
    with pytest.raises(ValueError, match=r"hqg/checkpoints/last.pt: not a CycleGAN checkpoint"):
        make(tmp_path / "c").load_state(tmp_path / "hqg" / "checkpoints" / "last.pt")
    cyc = make(tmp_path / "cyc")
    cyc.fit(1)
    torch.manual_seed(0)
    other = Trainer(HQGNet(3, "tiny", **TINY), HQGLoss(), UnpairedDataset(DATA, size=32), run_dir=tmp_path / "o",
                    batch_size=2, progress=False)
    with pytest.raises(ValueError, match="does not fit this trainer"):
        other.load_state(tmp_path / "cyc" / "checkpoints" / "last.pt")
    wider = CycleGANTrainer(HQGNet(3, "tiny", **{**TINY, "gen_base": 4}), baseline_loss(), UnpairedDataset(DATA, size=32),
                            run_dir=tmp_path / "w", batch_size=2, progress=False)
    with pytest.raises(ValueError, match=r"cyc/checkpoints/last.pt: the checkpoint's model_config differs .*gen_base"):
        wider.load_state(tmp_path / "cyc" / "checkpoints" / "last.pt")


def test_nan_guard_and_checkpoint_refusal(tmp_path):
    tr = make(tmp_path)
    tr.fit(1)
    good = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    tr.step_fn.lambda_cycle = math.inf
    with pytest.raises(NonFiniteLossError, match=r"step 2: term 'g_cycle' = .*\(weight inf\)"):
        tr.fit(2)
    with torch.no_grad():
        next(tr.gen_lq.parameters())[0] = math.nan
    with pytest.raises(NonFiniteLossError, match="refusing to write .*non-finite weights in gen_lq"):
        tr.save_checkpoint()
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == good
