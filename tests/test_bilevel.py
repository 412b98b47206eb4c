"""hqg.train.bilevel: step isolation, the unrolled hypergradient vs finite differences, aligned masks, mixed batches,
the task-weight schedule, exact resume, fixed segmenter, pre-training, clear errors."""
import copy, csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import hqg.train.bilevel as bl
from hqg.train.bilevel import BilevelTrainer, SegmentationSet, pretrain_segmenter, task_weight, unrolled_seg_logits
from hqg.data import UnpairedDataset
from hqg.model.losses import HQGLoss, seg_loss
from hqg.model.networks import HQGNet, Segmenter
from hqg.train.loop import load_checkpoint
from hqg.train.hqg import Trainer
from hqg.train.parts import adam

ROOT = Path(__file__).resolve().parents[1]
VESSELS = ROOT / "data_samples" / "vessels"
TINY = dict(gen_base=8, gen_max_width=32, disc_base=8, disc_max_width=32, enc_base=8, enc_depth=3, enc_max_width=32,
            latent=16, vnm_hidden=32, seg_base=8, seg_max_width=32)


def make_net(seed=0, with_seg=True):
    torch.manual_seed(seed)
    return HQGNet(3, "tiny", with_seg=with_seg, **TINY)


def make_trainer(run_dir, net=None, lambda_seg=1.0, **kw):
    kw = {"batch_size": 2, "log_every": 1, "sample_every": 0, "ckpt_every": 0, "progress": False, "default_guidance": 2, **kw}
    return BilevelTrainer(net or make_net(), HQGLoss(lambda_seg=lambda_seg), UnpairedDataset(VESSELS, size=32),
                          run_dir=run_dir, **kw)


def states(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def equal(a, b):  # exact: step isolation, same-process re-runs and bitwise resume are the contracts
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def first_batch(tr):
    return next(iter(tr.loader))


# ---------------------------------------------------------------- step isolation

def test_d_step_and_s_step_change_only_their_own_network(tmp_path):
    tr = make_trainer(tmp_path)
    b = first_batch(tr)
    g0, d0, s0 = states(tr.gen), states(tr.disc), states(tr.seg)
    x_enh, kl = tr.generate(b["lq"], b["hq"])
    tr.d_step(b["hq"], x_enh)
    assert equal(states(tr.gen), g0) and equal(states(tr.seg), s0) and not equal(states(tr.disc), d0)
    assert all(p.grad is None for p in tr.seg.parameters()) and all(p.grad is None for p in tr.gen.parameters())
    d1 = states(tr.disc)
    out = tr.s_step(x_enh, b["mask"], b["has_mask"])
    assert equal(states(tr.gen), g0) and equal(states(tr.disc), d1) and not equal(states(tr.seg), s0)
    assert all(p.grad is None for p in tr.gen.parameters()) and all(p.grad is None for p in tr.disc.parameters())
    assert set(out) == {"s_seg"} and out["s_seg"].ndim == 0 and 0 < float(out["s_seg"]) < 3


@pytest.mark.parametrize("solver", ["alternating", "unrolled"])
def test_g_step_leaves_s_and_d_unchanged(tmp_path, solver):
    tr = make_trainer(tmp_path, solver=solver)
    b = first_batch(tr)
    x_enh, kl = tr.generate(b["lq"], b["hq"])
    g0, d0, s0 = states(tr.gen), states(tr.disc), states(tr.seg)
    out = tr.g_step(b["lq"], b["hq"], x_enh, kl, b["mask"], b["has_mask"], 1.0)
    assert equal(states(tr.seg), s0) and equal(states(tr.disc), d0) and not equal(states(tr.gen), g0)
    assert all(p.grad is None for p in tr.seg.parameters())
    assert tr.seg.training and all(p.requires_grad for p in tr.seg.parameters())  # restored after the G step
    assert float(out["g_seg"]) > 0


def test_task_term_reaches_g_through_the_segmenter(tmp_path):
    # the G update differs from the pure-enhancement update exactly when lambda_task > 0
    ups = []
    for lam in (0.0, 1.0):
        tr = make_trainer(tmp_path / str(lam))
        b = first_batch(tr)
        x_enh, kl = tr.generate(b["lq"], b["hq"])
        out = tr.g_step(b["lq"], b["hq"], x_enh, kl, b["mask"], b["has_mask"], lam)
        ups.append((states(tr.gen), float(out["g_seg"])))
    assert not equal(ups[0][0], ups[1][0])
    assert ups[0][1] == 0.0 and ups[1][1] > 0   # exact: an unused term is logged as a constant zero


# ---------------------------------------------------------------- unrolled hypergradient

def test_unrolled_hypergradient_matches_central_differences():
    """Toy bi-level problem in float64: G_θ(y) = sigmoid(1x1 conv_θ(y)), S = one 3x3 conv. The autograd gradient of
    L(S_φ'(G_θ(y)), m), φ' = φ - η ∇_φ L(S_φ(G_θ(y)), m), matches central differences in θ to 1e-6 (relative)."""
    torch.manual_seed(0)
    gen = nn.Conv2d(3, 3, 1).double()
    seg = nn.Conv2d(3, 1, 3, padding=1).double()
    y = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    m = (torch.rand(2, 1, 8, 8) > 0.6).double()
    theta = torch.cat([gen.weight.detach().flatten(), gen.bias.detach()]).requires_grad_(True)

    def objective(th, eta=0.8):
        x = torch.sigmoid(F.conv2d(y, th[:9].view(3, 3, 1, 1), th[9:]))
        return seg_loss(unrolled_seg_logits(seg, x, m, inner_lr=eta), m)

    grad, = torch.autograd.grad(objective(theta), theta)
    eps, fd = 1e-6, torch.zeros_like(grad)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta); e[i] = eps
        fd[i] = (objective(theta.detach() + e) - objective(theta.detach() - e)) / (2 * eps)
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-9), (grad, fd)
    # the look-ahead matters: the first-order gradient (S_φ' held fixed) differs
    x1 = torch.sigmoid(F.conv2d(y, theta[:9].view(3, 3, 1, 1), theta[9:]))
    lookahead = unrolled_seg_logits(seg, x1.detach(), m, inner_lr=0.8).detach()
    w = seg.weight.detach() - 0.8 * torch.autograd.grad(seg_loss(seg(x1.detach()), m), seg.weight)[0]
    bias = seg.bias.detach() - 0.8 * torch.autograd.grad(seg_loss(seg(x1.detach()), m), seg.bias)[0]
    assert torch.allclose(lookahead, F.conv2d(x1.detach(), w, bias, padding=1))        # φ' is one plain GD step
    first_order, = torch.autograd.grad(seg_loss(F.conv2d(x1, w, bias, padding=1), m), theta)
    assert (first_order - grad).abs().max() > 1e-4 * grad.abs().max()
    assert all(p.grad is None for p in seg.parameters())


# ---------------------------------------------------------------- masks stay aligned

def _write_mask_pairs(folder, n=3, size=40, seed=0):
    """RGB images whose mask is exactly their thresholded red channel (written and read back as 8-bit PNG)."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True); (folder / "msk").mkdir()
    for i in range(n):
        im = (rng.random((size, size + 8, 3)) * 255).astype(np.uint8)
        Image.fromarray(im).save(folder / "img" / f"a{i}.png")
        Image.fromarray(((im[..., 0] > 127) * 255).astype(np.uint8)).save(folder / "msk" / f"a{i}.png")


def test_masks_stay_aligned_through_random_views(tmp_path):
    _write_mask_pairs(tmp_path)
    ds = SegmentationSet(tmp_path / "img", tmp_path / "msk", size=24, augment=True, seed=3)
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            it = ds[i]
            assert it["image"].shape == (3, 24, 24) and it["mask"].shape == (1, 24, 24)
            assert torch.equal(it["mask"][0], (it["image"][0] > 0.5).float())
            seen.add(it["image"][0, 0, :4].sum().item())
    assert len(seen) > 6                                                   # the views really differ
    # the same holds for the LQ masks of the unpaired training set (flips, rot90, crops)
    root = tmp_path / "unpaired"
    _write_mask_pairs(root)
    (root / "img").rename(root / "lq"); (root / "msk").rename(root / "masks")
    (root / "hq").mkdir(); Image.new("RGB", (48, 48)).save(root / "hq" / "h.png")
    uds = UnpairedDataset(root, size=24, seed=1, resize="upscale_only")   # native-scale crops, as the tiny config
    for epoch in range(3):
        uds.set_epoch(epoch)
        for i in range(len(uds)):
            it = uds[i]
            assert bool(it["has_mask"]) and torch.equal(it["mask"][0], (it["lq"][0] > 0.5).float())


def test_segmentation_set_errors_and_determinism(tmp_path):
    _write_mask_pairs(tmp_path)
    a = SegmentationSet(tmp_path / "img", tmp_path / "msk", size=16, seed=5)
    b = SegmentationSet(tmp_path / "img", tmp_path / "msk", size=16, seed=5)
    assert torch.equal(a[1]["image"], b[1]["image"]) and len(a) == 3       # exact: same seed, same process
    c = SegmentationSet(tmp_path / "img", tmp_path / "msk", size=16, augment=False)
    assert torch.equal(c[0]["image"], c[0]["image"]) and c[0]["image"].shape == (3, 16, 16)
    (tmp_path / "msk" / "a2.png").unlink()
    with pytest.raises(ValueError, match=r"masks: no mask in .* for 1 image\(s\) \['a2.png'\]"):
        SegmentationSet(tmp_path / "img", tmp_path / "msk")
    Image.new("L", (8, 8)).save(tmp_path / "msk" / "zz.png")
    with pytest.raises(ValueError, match="has no LQ image with stem 'zz'"):
        SegmentationSet(tmp_path / "img", tmp_path / "msk")
    with pytest.raises(FileNotFoundError, match="images: .*nothere does not exist"):
        SegmentationSet(tmp_path / "nothere", tmp_path / "msk")
    for kw, msg in ((dict(size=0), "size"), (dict(channels=2), "channels"), (dict(resize="crop"), "resize")):
        with pytest.raises(ValueError, match=msg):
            SegmentationSet(tmp_path / "img", tmp_path / "img", **kw)


# ---------------------------------------------------------------- mixed batches

def _mixed_batch(tr, fill):
    b = first_batch(tr)
    lq = torch.cat([b["lq"], b["lq"][:1].flip(-1)])
    hq = torch.cat([b["hq"], b["hq"][:1]])
    mask = torch.cat([b["mask"], torch.full_like(b["mask"][:1], fill)])
    return lq, hq, mask, torch.tensor([True, True, False])


def test_items_without_masks_do_not_enter_s_step_or_task_term(tmp_path):
    results = []
    for fill in (0.0, 1.0):   # the no-mask item's (ignored) mask content must not matter
        for solver in ("alternating", "unrolled"):
            tr = make_trainer(tmp_path / f"{fill}{solver}", solver=solver)
            lq, hq, mask, has = _mixed_batch(tr, fill)
            x_enh, kl = tr.generate(lq, hq)
            s = tr.s_step(x_enh, mask, has)
            # the S step equals one on the masked items alone
            ref = copy.deepcopy(tr.seg); ref.load_state_dict(make_net().seg.state_dict())
            opt = adam(ref.parameters(), lr=1e-3)  # the optimizer the trainer builds (fused on the CPU)
            loss = seg_loss(ref(x_enh[:2].detach()), mask[:2]); opt.zero_grad(); loss.backward(); opt.step()
            # exact: the trainer selects the masked items by indexing, so it runs the same ops on the same values
            assert equal(states(tr.seg), states(ref)) and torch.equal(s["s_seg"], loss.detach())
            # the task term equals the loss on the masked items alone
            expect = seg_loss(tr.task_logits(x_enh[:2], mask[:2]), mask[:2]).detach()
            g = tr.g_step(lq, hq, x_enh, kl, mask, has, 1.0)
            assert torch.allclose(g["g_seg"], expect, rtol=1e-6, atol=0)
            results.append((solver, states(tr.gen)))
    assert equal(results[0][1], results[2][1]) and equal(results[1][1], results[3][1])   # exact: the ignored mask never enters


def test_batch_without_masks_trains_only_the_gan_part(tmp_path):
    tr = make_trainer(tmp_path)
    b = first_batch(tr)
    b["has_mask"] = torch.zeros(2, dtype=torch.bool)
    s0, g0 = states(tr.seg), states(tr.gen)
    out = tr.train_step(b)
    assert equal(states(tr.seg), s0) and not equal(states(tr.gen), g0)
    assert float(out["s_seg"]) == 0 and float(out["g_seg"]) == 0 and float(out["lambda_task"]) == 0   # exact: constant zeros
    del b["mask"], b["has_mask"]   # a dataset with no mask keys at all
    out = tr.train_step(b)
    assert float(out["s_seg"]) == 0 and float(out["lambda_task"]) == 0 and tr.step == 2


# ---------------------------------------------------------------- schedule, logs, checkpoints

def test_task_weight_schedule():
    assert [task_weight(s, 0.5, 3, 4) for s in range(9)] == pytest.approx([0, 0, 0, 0.125, 0.25, 0.375, 0.5, 0.5, 0.5], abs=1e-12)
    assert [task_weight(s, 2.0, 1, 0) for s in range(3)] == pytest.approx([0, 2.0, 2.0], abs=1e-12)
    assert task_weight(0, 1.0) == pytest.approx(1.0, abs=1e-12)


def test_logged_lambda_task_follows_warmup_and_ramp(tmp_path):
    tr = make_trainer(tmp_path, lambda_seg=2.0, warmup_steps=1, ramp_steps=2, max_steps=4)
    tr.fit()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [float(r["lambda_task"]) for r in rows] == pytest.approx([0.0, 1.0, 2.0, 2.0], abs=1e-12)
    assert float(rows[0]["g_seg"]) == 0 and all(float(r["g_seg"]) > 0 for r in rows[1:])
    assert all(float(r["s_seg"]) > 0 for r in rows)
    head = list(rows[0])
    assert head[head.index("g_total") + 1:head.index("g_total") + 3] == ["s_seg", "lambda_task"]
    last = tmp_path / "checkpoints" / "last.pt"
    net = HQGNet.from_checkpoint(last)            # the inference model holds the co-trained S
    assert equal(states(net.seg), states(tr.seg)) and net.has_default_guidance
    ts = load_checkpoint(last)["train_state"]
    assert ts["bilevel"] == dict(solver="alternating", seg_steps=1, lr_s=1e-3, inner_lr=1e-2, warmup_steps=1,
                                 ramp_steps=2, train_seg=True, lambda_task=2.0)
    assert len(ts["opt_s"]["state"]) == len(list(tr.seg.parameters()))


@pytest.mark.parametrize("solver", ["alternating", "unrolled"])
def test_exact_resume_is_bitwise(tmp_path, solver):
    kw = dict(solver=solver, seg_steps=2, warmup_steps=1, ramp_steps=2)
    straight = make_trainer(tmp_path / "a", **kw)
    straight.fit(4)
    first = make_trainer(tmp_path / "b", **kw)
    first.fit(2)
    resumed = make_trainer(tmp_path / "c", net=make_net(99), **kw)
    assert not equal(states(resumed.seg), states(straight.seg))
    resumed.load_state(tmp_path / "b" / "checkpoints" / "last.pt")
    resumed.fit(4)
    assert resumed.step == straight.step == 4
    for m in ("gen", "disc", "seg", "gen_ema", "enc"):
        assert equal(states(getattr(resumed, m)), states(getattr(straight, m))), m
    sa, sb = resumed.opt_s.state_dict()["state"], straight.opt_s.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    ra = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    rc = list(csv.DictReader(open(tmp_path / "c" / "metrics.csv")))
    assert [r["s_seg"] for r in ra[2:]] == [r["s_seg"] for r in rc]   # exact: bitwise resume is the contract


def test_resume_checks(tmp_path):
    gan = Trainer(make_net(), HQGLoss(), UnpairedDataset(VESSELS, size=32), run_dir=tmp_path / "gan", batch_size=2,
                  progress=False, log_every=0, sample_every=0, ckpt_every=0)
    gan.fit(1)
    with pytest.raises(ValueError, match="not a bi-level checkpoint"):
        make_trainer(tmp_path / "x").load_state(tmp_path / "gan" / "checkpoints" / "last.pt")
    tr = make_trainer(tmp_path / "y"); tr.fit(1)
    with pytest.warns(UserWarning, match="other bi-level settings.*'seg_steps': \\(1, 3\\)"):
        make_trainer(tmp_path / "z", seg_steps=3).load_state(tmp_path / "y" / "checkpoints" / "last.pt")


def test_fixed_segmenter_only_g_adapts(tmp_path):
    tr = make_trainer(tmp_path, train_seg=False)
    s0 = states(tr.seg)
    row = tr.fit(2)
    assert equal(states(tr.seg), s0) and not tr.seg.training
    assert row["s_seg"] > 0 and row["g_seg"] > 0 and row["lambda_task"] == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- pre-training, errors

def test_pretrain_segmenter_is_seeded_and_lowers_the_loss():
    ds = SegmentationSet(VESSELS / "hq", VESSELS / "hq_masks", size=32)
    hists, weights = [], []
    for _ in range(2):
        torch.manual_seed(0)
        seg = Segmenter(3, 1, base=8, depth=2, max_width=16)
        hists.append(pretrain_segmenter(seg, ds, steps=3, batch_size=4, lr=3e-3, device="cpu"))
        weights.append(states(seg))
    assert hists[0] == hists[1] and equal(*weights) and len(hists[0]) == 3   # exact: same seed, same process
    assert hists[0][-1] < hists[0][0]
    with pytest.raises(ValueError, match="batch_size=9 is larger than the dataset"):
        pretrain_segmenter(seg, ds, steps=1, batch_size=9)
    with pytest.raises(ValueError, match="lr: expected"):
        pretrain_segmenter(seg, ds, lr=0)


def test_bad_arguments_name_themselves(tmp_path, monkeypatch):
    ds = UnpairedDataset(VESSELS, size=32)
    kw = dict(run_dir=tmp_path, batch_size=2, progress=False)
    cases = [((make_net(with_seg=False), HQGLoss(lambda_seg=1.0), ds), {}, "net: expected an HQGNet built with with_seg=True"),
             ((nn.Conv2d(1, 1, 1), HQGLoss(), ds), {}, "got Conv2d"),
             ((make_net(), nn.MSELoss(), ds), {}, "loss: expected an HQGLoss"),
             ((make_net(), HQGLoss(), ds), dict(solver="newton"), "solver: expected one of \\['alternating', 'unrolled'\\]"),
             ((make_net(), HQGLoss(), ds), dict(seg_steps=-1), "bilevel.seg_steps: expected values >= 0, got -1"),
             ((make_net(), HQGLoss(), ds), dict(warmup_steps=1.5), "bilevel.warmup_steps: expected an int, got 1.5"),
             ((make_net(), HQGLoss(), ds), dict(ramp_steps=True), "ramp_steps"),
             ((make_net(), HQGLoss(), ds), dict(lr_s=-1.0), "bilevel.lr_s: expected values >= 0.0, got -1.0"),
             ((make_net(), HQGLoss(), ds), dict(inner_lr=-0.1), "bilevel.inner_lr: expected values >= 0.0, got -0.1"),
             ((make_net(), HQGLoss(), ds), dict(train_seg="yes"), "bilevel.train_seg: expected true or false, got 'yes'")]
    for args, extra, msg in cases:
        with pytest.raises(ValueError, match=msg):
            BilevelTrainer(*args, **kw, **extra)
    with pytest.raises(TypeError, match="no_such_option"):
        BilevelTrainer(make_net(), HQGLoss(), ds, no_such_option=1, **kw)
