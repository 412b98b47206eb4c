"""One DDP process of tests/test_ddp.py, launched by `torchrun --nproc_per_node 2 tests/ddp_worker.py METHOD OUT [DATA]`.

Trains a tiny net of METHOD (hqg, bilevel, cyclegan) for 4 steps with a checkpoint at step 2, then builds a fresh
trainer (other initial weights), resumes it from the step-2 checkpoint and trains it to step 4; saves both runs'
weights per rank to OUT/rank<R>.pt for the test to compare."""
import sys
from pathlib import Path
import torch
import torch.distributed as dist
from hqg.model.networks import HQGNet
from hqg.model.losses import HQGLoss
from hqg.data import UnpairedDataset
from hqg.train.hqg import Trainer
from hqg.train.bilevel import BilevelTrainer
from hqg.train.cyclegan import CycleGANTrainer, baseline_loss

ROOT = Path(__file__).resolve().parents[1] / "data_samples"
TINY = dict(gen_base=8, gen_max_width=32, disc_base=8, disc_max_width=32, enc_base=8, enc_depth=3, enc_max_width=32,
            latent=16, vnm_hidden=32)


def build(method: str, run_dir: Path, seed: int):
    torch.manual_seed(seed)
    kw = dict(run_dir=run_dir, batch_size=2, max_steps=4, log_every=1, sample_every=0, ckpt_every=2, progress=False,
              default_guidance=2)
    if method == "hqg":
        return Trainer(HQGNet(3, "tiny", **TINY), HQGLoss(), UnpairedDataset(ROOT / "fundus", size=32), **kw)
    if method == "bilevel":  # masks on some items only: a rank may have none in a batch (the zero-weighted S loss)
        net = HQGNet(3, "tiny", with_seg=True, seg_base=8, seg_max_width=32, **TINY)
        tr = BilevelTrainer(net, HQGLoss(lambda_seg=1.0), UnpairedDataset(sys.argv[3], size=32), solver="unrolled", **kw)
        s_step, tr.no_mask_batches = tr.step_fn.s_step, 0
        def counting(x_enh, mask, has_mask=None):
            tr.no_mask_batches += int(has_mask is not None and not bool(has_mask.any()))
            return s_step(x_enh, mask, has_mask)
        tr.step_fn.s_step = counting
        return tr
    return CycleGANTrainer(HQGNet(3, "tiny", **TINY), baseline_loss("stillgan", illum_patch_sizes=(8, 16)),
                           UnpairedDataset(ROOT / "fundus", size=32), r1_gamma=1.0, **kw)


def states(tr) -> dict:
    return {name: {k: v.detach().clone() for k, v in m.state_dict().items()}
            for name, m in {**tr.step_fn.modules(), "ema": tr.ema}.items()}


if __name__ == "__main__":
    method, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        tr = build(method, out / "run", seed=100 + rank)      # different initial weights on each rank
        init = states(tr)
        tr.fit()
        straight = states(tr)
        tr2 = build(method, out / "resumed", seed=200 + rank)
        tr2.load_state(out / "run" / "checkpoints" / "step_000002.pt")
        tr2.fit(4)
        torch.save({"init": init, "straight": straight, "resumed": states(tr2), "world": tr.world_size,
                    "wrapped": type(tr.gen_train).__name__, "rows": tr.last_metrics,
                    "no_mask_batches": getattr(tr, "no_mask_batches", 0)}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
