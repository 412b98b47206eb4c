"""hqg.train.loop: step isolation, NaN guard, checkpoints + exact resume, logs/samples, SIGKILL resume, DDP (gloo)."""
import csv, json, math, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hqg.data import UnpairedDataset, PairedTestSet
from hqg.data.io import read_image
from hqg.model.losses import HQGLoss, TERM_NAMES
from hqg.model.networks import HQGNet
from hqg.train.loop import NonFiniteLossError, load_checkpoint, find_last_checkpoint, save_atomic, lr_factor, ema_decay_at, psnr_metric
from hqg.train.hqg import Trainer
from hqg.app.speed import bench_training

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data_samples" / "fundus"
TINY = dict(gen_base=8, gen_max_width=32, disc_base=8, disc_max_width=32, enc_base=8, enc_depth=3,
            enc_max_width=32, latent=16, vnm_hidden=32)


def make_trainer(run_dir, seed=0, net_seed=0, **kw):
    torch.manual_seed(net_seed)
    kw = {"batch_size": 2, "log_every": 1, "sample_every": 0, "ckpt_every": 0, "progress": False, "seed": seed, **kw}
    return Trainer(HQGNet(3, "tiny", **TINY), HQGLoss(), UnpairedDataset(DATA, size=32), run_dir=run_dir, **kw)


def states(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def equal(a, b):
    "Bitwise equal state dicts. exact: only for copies, step isolation, checkpoint round trips and same-process resume."
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def max_diff(a, b):
    "Largest absolute difference over the floating-point tensors of two state dicts with the same keys."
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point() and a[k].numel())


def differs(a, b, margin=1e-5):
    "Some float value moved by more than `margin` (one Adam step at lr 2e-4 moves weights by ~2e-4)."
    return max_diff(a, b) > margin


def first_batch(tr):
    b = next(iter(tr.loader))
    return b["lq"], b["hq"]


# ---------------------------------------------------------------- step isolation

@pytest.mark.parametrize("finetune", [False, True])
def test_d_step_and_g_step_change_only_their_own_network(tmp_path, finetune):
    tr = make_trainer(tmp_path, finetune_guidance=finetune)
    x_lq, x_hq = first_batch(tr)
    g0, d0, e0, ema0 = states(tr.gen), states(tr.disc), states(tr.enc), states(tr.gen_ema)
    x_enh, kl = tr.generate(x_lq, x_hq)
    tr.d_step(x_hq, x_enh)
    # exact: step isolation, a D step must not touch G, E or the EMA copy at all
    assert equal(states(tr.gen), g0) and equal(states(tr.enc), e0) and equal(states(tr.gen_ema), ema0)
    assert differs(states(tr.disc), d0)                               # measured 2e-4 (one Adam step)
    assert all(p.grad is None for p in tr.gen.parameters())          # no gradient leaked into G
    d1 = states(tr.disc)
    tr.g_step(x_lq, x_hq, x_enh, kl)
    assert equal(states(tr.disc), d1)                                 # exact: step isolation, parameters and buffers of D
    assert all(p.grad is None for p in tr.disc.parameters())
    assert all(p.requires_grad for p in tr.disc.parameters()) and tr.disc.training  # restored after the G step
    assert differs(states(tr.gen), g0)                                # measured 2e-4 (one Adam step)
    if finetune:                                                      # E_g moves only when fine-tuned
        assert differs(states(tr.enc), e0)                            # measured 2e-4
    else:
        assert equal(states(tr.enc), e0)                              # exact: step isolation


def test_train_step_updates_ema_with_warmup_and_lr_schedule(tmp_path):
    tr = make_trainer(tmp_path, lr_decay_start=2, max_steps=4)
    init = states(tr.gen)
    tr.fit(1)
    d = ema_decay_at(1, 0.999)
    assert d == pytest.approx(2 / 11)
    for k, v in tr.gen_ema.state_dict().items():
        torch.testing.assert_close(v, d * init[k] + (1 - d) * tr.gen.state_dict()[k], rtol=0, atol=1e-6)
    tr.fit(4)
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr_g"] for r in rows] == pytest.approx([2e-4, 2e-4, 2e-4, 1e-4])   # constant, then linear decay
    assert [lr_factor(s, 4, 2) for s in range(5)] == pytest.approx([1, 1, 1, 0.5, 0], abs=1e-12)


def test_amp_on_cpu_only_with_bf16_units_and_channels_last_off(tmp_path):
    from hqg.bench import cpu_has_bf16
    tr = make_trainer(tmp_path, amp=True, channels_last=True, device="cpu")
    # bf16 autocast on a CPU only where it has bf16 units (AMX, AVX-512-bf16); channels_last is CUDA-only
    assert (tr.amp, tr.channels_last, tr.device.type) == (cpu_has_bf16(), False, "cpu")
    assert not make_trainer(tmp_path / "off", amp=False, device="cpu").amp           # the opt-out
    # the autocast code path runs with CPU bf16 autocast when forced, on any CPU
    tr.amp = True
    x_lq, x_hq = first_batch(tr)
    x_enh, kl = tr.generate(x_lq, x_hq)
    assert x_enh.dtype == torch.float32 and x_enh.shape == (2, 3, 32, 32)
    terms = {**tr.d_step(x_hq, x_enh), **tr.g_step(x_lq, x_hq, x_enh, kl)}
    assert all(torch.isfinite(v) for v in terms.values()) and terms["g_wavelet"] > 0


def test_bad_settings_name_the_argument(tmp_path):
    ds = UnpairedDataset(DATA, size=32)
    net = HQGNet(3, "tiny", **TINY)
    cases = [(dict(log_every=-1), "train.log_every: expected values >= 0, got -1"), (dict(lr_d=0), "lr_d: expected a learning rate > 0"),
             (dict(r1_gamma=-1), "r1_gamma"), (dict(ema_decay=1.5), "ema_decay: expected a value in"),
             (dict(val_every=5), "val_every: given without a val_set"), (dict(batch_size=64), "batch_size=64 is larger"),
             (dict(config={"x": object()}), "config.x: expected plain data")]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            Trainer(net, HQGLoss(), ds, run_dir=tmp_path, **kw)
    with pytest.raises(ValueError, match="lambda_seg=1.0 needs a segmenter step"):
        Trainer(net, HQGLoss(lambda_seg=1.0), ds, run_dir=tmp_path)
    with pytest.raises(ValueError, match="net: expected an HQGNet, got Generator"):
        Trainer(net.gen, HQGLoss(), ds, run_dir=tmp_path)
    with pytest.raises(ValueError, match="max_steps: expected an int >= 0"):
        make_trainer(tmp_path).fit(2.5)


# ---------------------------------------------------------------- NaN guard

def test_nan_term_stops_with_its_name_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    tr = make_trainer(tmp_path, ckpt_every=1)
    tr.fit(2)
    last = tmp_path / "checkpoints" / "last.pt"
    good = last.read_bytes()
    monkeypatch.setattr(tr.loss.wavelet, "forward", lambda x_lq, x_enh: x_enh.sum() * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"step 3: term 'g_wavelet' = nan") as e:
        tr.fit(4)
    assert (e.value.term, e.value.step) == ("g_wavelet", 3)
    assert str(last) in str(e.value) and e.value.checkpoint == last
    assert last.read_bytes() == good
    ck = load_checkpoint(last)
    assert ck["step"] == 2
    assert all(torch.isfinite(t).all() for t in ck["model"].values() if t.is_floating_point())
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt", "step_000001.pt", "step_000002.pt"]


def test_nan_weight_and_nan_discriminator_term_are_named(tmp_path, monkeypatch):
    tr = make_trainer(tmp_path)
    tr.loss.weights["cons"] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"step 1: term 'g_cons' = .*\(weight inf\).*none written yet"):
        tr.fit(1)
    tr = make_trainer(tmp_path / "b")
    import hqg.train.hqg as T                    # the module whose D step calls r1_penalty
    monkeypatch.setattr(T, "r1_penalty", lambda real, x: real.sum() * float("inf"))
    with pytest.raises(NonFiniteLossError, match="term 'd_r1'"):
        tr.fit(1)


def test_checkpoint_with_nan_weights_is_refused(tmp_path):
    tr = make_trainer(tmp_path)
    tr.fit(1)
    good = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with torch.no_grad():
        next(tr.gen.parameters())[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="refusing to write .*non-finite weights in gen"):
        tr.save_checkpoint()
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == good


# ---------------------------------------------------------------- checkpoints, exact resume

def test_checkpoint_contents_load_weights_only(tmp_path):
    tr = make_trainer(tmp_path, config={"preset": "tiny", "data": DATA, "sizes": (32, 64)})
    tr.fit(2)
    path = tmp_path / "checkpoints" / "last.pt"
    raw = torch.load(path, weights_only=True)   # plain torch, no allow-listing needed
    ck = load_checkpoint(path)
    assert ck["format"] == "hqg-train" and ck["step"] == 2 and ck["hqg_version"] and ck["torch_version"] == torch.__version__
    assert ck["config"] == {"preset": "tiny", "data": str(DATA), "sizes": [32, 64]}
    ts = ck["train_state"]
    assert {"gen", "disc", "enc_hq", "gen_ema", "opt_g", "opt_d", "sched_g", "sched_d", "rng", "data"} <= set(ts)
    assert ts["data"] == {"epoch": 0, "offset": 4, "batch_size": 2, "world_size": 1, "loader_rng": ts["data"]["loader_rng"]}
    assert isinstance(ts["rng"]["numpy"]["keys"], torch.Tensor) and ts["rng"]["numpy"]["keys"].shape == (624,)
    assert ts["rng"]["python"]["state"].shape == (625,)
    assert ts["sched_g"]["last_epoch"] == 2 and len(ts["opt_g"]["state"]) == len(list(tr.gen.parameters()))
    # model = the inference net with the EMA generator and a default guidance code
    net = HQGNet.from_checkpoint(path)
    # exact: checkpoint round trip; the EMA generator differs from the raw one by 6e-5 after 2 steps
    assert equal(states(net.gen), states(tr.gen_ema)) and differs(states(net.gen), states(tr.gen))
    assert equal(states(net.disc), states(tr.disc)) and net.has_default_guidance
    assert equal(raw["model"], ck["model"])                           # exact: the same file read back twice
    # tensors shared by model and train_state (disc, enc_hq, EMA gen) are stored once: with G, D, E the nets' sizes,
    # the file holds EMA G + D + E (model), raw G, and Adam's two moments of G and D = 4G + 3D + E (5G + 4D + 2E if not)
    G, D, E = (sum(t.numel() * t.element_size() for t in m.state_dict().values()) for m in (tr.gen, tr.disc, tr.enc))
    assert 4 * G + 3 * D + E < path.stat().st_size < 4 * G + 3 * D + E + (G + D + E) / 2


@pytest.mark.parametrize("case", ["2_then_4", "kill_at_3_of_6_with_decay"])
def test_exact_resume_is_bitwise(tmp_path, case):
    if case == "2_then_4":
        straight = make_trainer(tmp_path / "a")
        straight.fit(4)
        first = make_trainer(tmp_path / "b")
        first.fit(2)
        ckpt, total = tmp_path / "b" / "checkpoints" / "last.pt", 4
    else:   # crosses an epoch boundary (4 batches per epoch) and a learning-rate decay
        straight = make_trainer(tmp_path / "a", max_steps=6, lr_decay_start=2, ckpt_every=3)
        straight.fit()
        ckpt, total = tmp_path / "a" / "checkpoints" / "step_000003.pt", None
    resumed = make_trainer(tmp_path / "c", net_seed=99, max_steps=6, lr_decay_start=2 if total is None else None)
    assert differs(states(resumed.gen), states(straight.gen), 1e-2)  # another init seed: measured 0.64
    resumed.load_state(ckpt)
    resumed.fit(total)
    assert resumed.step == straight.step and resumed.epoch == straight.epoch
    # exact: bitwise resume in one process on one machine is the contract
    for m in ("gen", "disc", "gen_ema", "enc"):
        assert equal(states(getattr(resumed, m)), states(getattr(straight, m))), m
    for a, b in ((resumed.opt_g, straight.opt_g), (resumed.opt_d, straight.opt_d)):
        sa, sb = a.state_dict()["state"], b.state_dict()["state"]
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_resume_rejects_other_networks_and_trainers(tmp_path):
    tr = make_trainer(tmp_path / "a")
    tr.fit(1)
    path = tmp_path / "a" / "checkpoints" / "last.pt"
    torch.manual_seed(0)
    other = Trainer(HQGNet(3, "tiny", **{**TINY, "gen_base": 4}), HQGLoss(), UnpairedDataset(DATA, size=32),
                    run_dir=tmp_path / "b", batch_size=2, progress=False)
    with pytest.raises(ValueError, match=r"model_config differs from this trainer's net in \['gen_base'\]"):
        other.load_state(path)
    ft = make_trainer(tmp_path / "c", finetune_guidance=True)
    with pytest.raises(ValueError, match="last.pt: does not fit this trainer"):
        ft.load_state(path)


def test_corrupt_and_foreign_checkpoints_name_the_file(tmp_path):
    tr = make_trainer(tmp_path / "run")
    tr.fit(1)
    good = tmp_path / "run" / "checkpoints" / "last.pt"
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("hello")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    torch.save({"x": np.zeros(2, dtype=object)}, tmp_path / "pickled.pt")     # not weights-only loadable
    tr.net.save_checkpoint(tmp_path / "model.pt")
    ck = load_checkpoint(good)
    del ck["train_state"]["opt_g"]
    torch.save(ck, tmp_path / "partial.pt")                  # the step's part is missing: found by HQGStep.check_state
    del ck["train_state"]["rng"]
    torch.save(ck, tmp_path / "partial2.pt")                 # the loop's part is missing: found on reading
    cases = {"trunc.pt": "not a readable checkpoint", "text.pt": "not a readable checkpoint",
             "pickled.pt": "not a readable checkpoint", "dict.pt": "not an hqg training checkpoint",
             "list.pt": "got list", "model.pt": "model-only checkpoint",
             "partial2.pt": r"incomplete hqg training checkpoint: missing \['train_state.rng'\]"}
    for name, msg in cases.items():
        with pytest.raises(ValueError, match=msg) as e:
            load_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)
        with pytest.raises(ValueError, match=msg):
            make_trainer(tmp_path / "r2").load_state(tmp_path / name)
    assert load_checkpoint(tmp_path / "partial.pt")["step"] == 1
    with pytest.raises(ValueError, match=r"partial.pt: incomplete hqg training checkpoint: missing \['train_state.opt_g'\]"):
        make_trainer(tmp_path / "r2").load_state(tmp_path / "partial.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_find_last_checkpoint(tmp_path):
    assert find_last_checkpoint(tmp_path / "nope") is None
    assert find_last_checkpoint(tmp_path) is None
    for name, has in (("20250101-000000-aaa", True), ("20250102-000000-aaa", True),
                      ("20250102-000000-aaa-1", True), ("20250103-000000-aaa", False)):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        if has: save_atomic({"step": 1}, tmp_path / name / "checkpoints" / "last.pt")
    (tmp_path / "20250104-000000-aaa" / "checkpoints").mkdir(parents=True)
    (tmp_path / "20250104-000000-aaa" / "checkpoints" / "step_000001.pt").write_bytes(b"")  # no last.pt
    (tmp_path / "notes.txt").write_text("x")
    assert find_last_checkpoint(tmp_path) == tmp_path / "20250102-000000-aaa-1" / "checkpoints" / "last.pt"
    run = tmp_path / "20250101-000000-aaa"
    assert find_last_checkpoint(run) == run / "checkpoints" / "last.pt"


# ---------------------------------------------------------------- logs, samples, validation

def test_metrics_samples_and_validation_files(tmp_path):
    val = PairedTestSet(DATA, size=32)
    tr = make_trainer(tmp_path, log_every=2, sample_every=2, n_samples=3, val_set=val, val_every=3)
    final = tr.fit(4)
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4]                   # step 3: a validation row
    terms = ["d_adv", "d_r1", "d_total"] + [f"g_{k}" for k in TERM_NAMES] + ["g_total"]
    for r in rows:
        assert set(terms + ["step", "epoch", "lr_g", "lr_d", "s_per_step"]) <= set(r)
        assert all(math.isfinite(r[k]) for k in terms) and r["s_per_step"] > 0 and r["lr_d"] == pytest.approx(2e-4, rel=1e-12)
        assert r["g_struct"] == 0 and r["g_wavelet"] > 0 and r["d_r1"] >= 0      # exact: a disabled term is a constant 0
        assert r["d_total"] == pytest.approx(r["d_adv"] + 0.5 * r["d_r1"], rel=1e-5)
    assert "val_psnr" not in rows[0] and {"val_psnr", "val_ssim", "val_psnr_lq", "val_ssim_lq"} <= set(rows[1])
    assert final == rows[-1] and "val_psnr" in final
    lq_psnr = np.mean([float(psnr_metric(val[i]["lq"][None], val[i]["gt"][None])) for i in range(len(val))])
    assert rows[1]["val_psnr_lq"] == pytest.approx(lq_psnr, rel=1e-5)
    with open(tmp_path / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["step"]) for r in table] == [2, 3, 4]
    assert list(table[0]) == ["step", "epoch"] + terms + ["lr_g", "lr_d", "s_per_step", "val_psnr", "val_psnr_lq",
                                                          "val_ssim", "val_ssim_lq"]
    assert table[0]["val_psnr"] == "" and float(table[1]["val_psnr"]) == pytest.approx(rows[1]["val_psnr"])
    assert float(table[2]["g_total"]) == pytest.approx(rows[2]["g_total"])
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]
    grid = read_image(tmp_path / "samples" / "step_000004.png")
    assert grid.shape == (3, 3 * 32 + 2 * 2, 3 * 32 + 2 * 2)
    ds = UnpairedDataset(DATA, size=32)                                 # fixed items, read at epoch 0
    for i in range(3):
        top = i * 34
        torch.testing.assert_close(grid[:, top:top + 32, :32], ds[i]["lq"], atol=0.5 / 255 + 1e-6, rtol=0)
        torch.testing.assert_close(grid[:, top:top + 32, 34:66], ds[i]["hq"], atol=0.5 / 255 + 1e-6, rtol=0)
    assert grid[:, 32:34].min() == 1                                    # exact: white gap, padding read back from 8 bits
    x_enh = tr.gen_ema(ds[0]["lq"][None], tr.enc(ds[0]["hq"][None]), 0.0).x_enh[0].detach()
    torch.testing.assert_close(grid[:, :32, 68:100], x_enh, atol=0.5 / 255 + 1e-6, rtol=0)


def test_bench_training_reports_speed():
    r = bench_training("tiny", batch=2, image_size=32, steps=1, verbose=False)
    assert {"s_per_step", "steps_per_s", "images_per_s"} <= set(r) and r["images_per_s"] == pytest.approx(2 * r["steps_per_s"])
    assert r["peak_mem_mb"] is None and r["amp"] is False


# ---------------------------------------------------------------- SIGKILL mid-run, then resume

KILL_SCRIPT = r"""
import sys, torch
torch.set_num_threads(1)
from hqg.model.networks import HQGNet
from hqg.model.losses import HQGLoss
from hqg.data import UnpairedDataset
from hqg.train.hqg import Trainer
torch.manual_seed(0)
tr = Trainer(HQGNet(3, "tiny", **TINY), HQGLoss(), UnpairedDataset(DATA, size=32), run_dir=sys.argv[1], batch_size=2,
             max_steps=100000, ckpt_every=1, keep_checkpoints=2, log_every=1, sample_every=0, progress=False)
tr.fit()
"""


def test_sigkill_mid_run_keeps_a_loadable_checkpoint_and_training_continues(tmp_path):
    run = tmp_path / "run"
    script = f"TINY = {TINY!r}\nDATA = {str(DATA)!r}\n" + KILL_SCRIPT
    proc = subprocess.Popen([sys.executable, "-c", script, str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            m = run / "metrics.jsonl"
            if m.is_file() and len(m.read_text().splitlines()) >= 4: break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert time.time() < deadline, "training subprocess made no progress"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None: proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    last = run / "checkpoints" / "last.pt"
    ck = load_checkpoint(last)
    s = ck["step"]
    assert s >= 3
    assert len(list((run / "checkpoints").glob("step_*.pt"))) <= 3
    tr = make_trainer(run, net_seed=5)
    tr.load_state(last)
    assert tr.step == s and not list((run / "checkpoints").glob(".*.tmp"))
    tr.fit(s + 2)
    assert tr.step == s + 2 and load_checkpoint(last)["step"] == s + 2
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, s + 3))                          # rows after the checkpoint were dropped, no gaps


# ---------------------------------------------------------------- DDP with 2 gloo processes

def _ddp_worker(rank, world, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)            # different initial weights: the trainer must start from rank 0's
        net = HQGNet(3, "tiny", **TINY)
        local_init = states(net.gen)
        tr = Trainer(net, HQGLoss(), UnpairedDataset(DATA, size=32), run_dir=Path(tmp) / "run", batch_size=2,
                     max_steps=3, log_every=1, sample_every=0, ckpt_every=0, progress=False)
        init = {"gen": states(tr.gen), "disc": states(tr.disc), "enc": states(tr.enc)}
        seen = list(tr.loader.sampler)
        tr.fit()
        torch.save({"local_init": local_init, "init": init, "seen": seen, "gen": states(tr.gen), "disc": states(tr.disc),
                    "gen_ema": states(tr.gen_ema), "ddp": type(tr.gen_train).__name__, "world": tr.world_size},
                   Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_ranks_train_identical_weights_and_rank0_writes_once(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["ddp"] == "DistributedDataParallel" and r0["world"] == 2
    assert differs(r0["local_init"], r1["local_init"], 1e-2)           # ranks built different nets (measured 0.66) ...
    for k in ("gen", "disc", "enc"):
        assert equal(r0["init"][k], r1["init"][k])                      # ... and started from rank 0's (exact: a broadcast copy)
    assert equal(r0["init"]["gen"], r0["local_init"])                   # exact: rank 0 keeps its own weights
    assert set(r0["seen"]).isdisjoint(r1["seen"]) and len(r0["seen"]) == 4   # different shards
    for k in ("gen", "disc", "gen_ema"):
        # exact: DDP lockstep on one machine, both ranks apply the same all-reduced gradients bit for bit
        assert equal(r0[k], r1[k]), k                                   # identical after training
        assert differs(r0[k], r0["init"]["gen" if k == "gen_ema" else k]), k   # 3 steps: measured 5e-4..6e-4
    files = sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert files == ["checkpoints/last.pt", "metrics.csv", "metrics.jsonl"]
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ck["step"] == 3 and ck["train_state"]["data"]["world_size"] == 2
    assert equal(ck["train_state"]["gen"], r0["gen"]) and equal(ck["train_state"]["disc"], r0["disc"])  # exact: round trip
    assert [json.loads(l)["step"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_image_style_targets_come_from_the_whole_hq_file(tmp_path):
    "loss.style_target 'image': the style term's targets are the statistics of each HQ partner's whole file (cached)."
    from hqg.app.runs import load_config, build
    from hqg.train.hqg import Trainer
    from hqg.model.losses import style_statistics
    from hqg.data.io import read_image
    cfg = load_config("tiny", {"data.root": str(Path(__file__).resolve().parents[1] / "data_samples" / "fundus"),
                               "data.size": 32, "data.batch_size": 2, "loss.style_target": "image",
                               "model.overrides": {"gen_base": 8, "enc_base": 8, "disc_base": 8}})
    net, loss, ds, _ = build(cfg)
    tr = Trainer(net, loss, ds, run_dir=tmp_path, batch_size=2, max_steps=1, progress=False, val_every=None)
    tr.fit()
    assert len(tr._style_cache) >= 1
    p, stats = next(iter(tr._style_cache.items()))
    torch.testing.assert_close(stats, style_statistics(read_image(p)[None])[0])


# ---------------------------------------------------------------- relative style term (lambda_guide)

def test_guide_term_second_guide_in_one_forward(tmp_path):
    "lambda_guide: each input is also enhanced under the next item's guide; the term is logged and trained."
    from hqg.model.losses import style_scale, style_statistics
    loss = HQGLoss(lambda_kl=0.0, lambda_guide=4.0)
    loss.guide_scale = style_scale(torch.cat([style_statistics(read_image(p)[None]) for p in sorted((DATA / "hq").glob("*.png"))[:4]]))
    tr = Trainer(HQGNet(3, "tiny", **TINY), loss, UnpairedDataset(DATA, size=32), run_dir=tmp_path, batch_size=2,
                 log_every=1, sample_every=0, ckpt_every=0, progress=False)
    out = tr.train_step(next(iter(tr.loader)))
    assert out["g_guide"].item() > 0 and math.isfinite(out["g_guide"].item())
    assert tr._x_alt is not None and tr._x_alt.shape == (2, 3, 32, 32) and tr._style_files.shape == (2, 7)
    with pytest.raises(ValueError, match=r"lambda_guide=4.0 .*needs batch_size >= 2, got 1"):
        Trainer(HQGNet(3, "tiny", **TINY), loss, UnpairedDataset(DATA, size=32), run_dir=tmp_path / "b1", batch_size=1,
                progress=False)


def test_guide_term_off_by_default(tmp_path):
    tr = make_trainer(tmp_path)
    out = tr.train_step(next(iter(tr.loader)))
    assert out["g_guide"].item() == 0.0  # exact: a disabled term is the constant zero the loss creates
    assert tr._x_alt is None


def test_lazy_r1_runs_every_k_steps_with_k_times_the_weight(tmp_path):
    tr = make_trainer(tmp_path, r1_every=2, max_steps=4)
    assert tr.step_fn.gan.r1_every == 2
    tr.fit(4)
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["d_r1"] > 0 for r in rows] == [True, False, True, False]                # steps 0 and 2 only
    for r in rows:  # d_total = d_adv + k * gamma/2 * R1 (gamma 1, k 2)
        assert r["d_total"] == pytest.approx(r["d_adv"] + 2 * 0.5 * r["d_r1"], rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="r1_every"):
        make_trainer(tmp_path / "bad", r1_every=0)


def test_optimizers_are_fused_adam_on_cpu(tmp_path):
    tr = make_trainer(tmp_path)
    tr.fit(1)
    assert all(o.defaults["fused"] is True for o in (tr.step_fn.opt_g, tr.step_fn.opt_d))


def test_compile_wraps_only_the_generator_and_keeps_plain_state_dicts(tmp_path):
    "LoopConfig.compile: the generator trains through torch.compile (lazy: nothing compiles until a step runs);"
    "the discriminator (R1 needs a double backward) does not; the kept modules and the EMA stay plain."
    from torch._dynamo.eval_frame import OptimizedModule
    plain, comp = make_trainer(tmp_path / "a"), make_trainer(tmp_path / "b", compile=True)
    assert isinstance(comp.step_fn.gen_train, OptimizedModule) and comp.step_fn.gen_train._orig_mod is comp.gen
    assert not isinstance(comp.step_fn.disc_train, OptimizedModule)
    assert not isinstance(plain.step_fn.gen_train, OptimizedModule) and plain.step_fn.gen_train is plain.gen
    assert list(states(comp.net)) == list(states(plain.net)) and list(states(comp.ema)) == list(states(plain.ema))


@pytest.mark.slow
def test_compiled_training_steps_match_eager_within_float_tolerance(tmp_path):
    "Three steps with the generator compiled (about a minute of compilation on one CPU core) track eager training."
    plain, comp = make_trainer(tmp_path / "a"), make_trainer(tmp_path / "b", compile=True)
    plain.fit(3); comp.fit(3)
    a, b = plain.last_metrics, comp.last_metrics
    for k in ("g_total", "d_total"): assert abs(a[k] - b[k]) <= 1e-3 * max(1.0, abs(a[k])), (k, a[k], b[k])
    assert max_diff(states(plain.net), states(comp.net)) < 1e-3
    keys = [set(load_checkpoint(find_last_checkpoint(tmp_path / d))["model"]) for d in "ab"]
    assert keys[0] == keys[1] and not any("_orig_mod" in k for k in keys[1])
