"""Refactor check: the same short runs of every method in two checkouts must log the same losses.

    python tools/same_losses.py OLD_CHECKOUT NEW_CHECKOUT [--steps 50]

Each checkout trains (in its own process, one thread) `tiny` HQG-Net on data_samples/fundus, `tiny-bilevel` on
data_samples/vessels and `tiny+cyclegan` on data_samples/fundus, logging every step; the script then compares every
logged term of every row (s_per_step excepted) and exits 1 if one differs by more than --tol.
"""
import argparse, json, os, subprocess, sys, tempfile
from pathlib import Path

RUNS = (("hqg", "tiny", {"data.root": "fundus"}, 1.0),
        ("bilevel", "tiny-bilevel", {"data.root": "vessels", "bilevel.warmup_steps": 5, "bilevel.ramp_steps": 5,
                                     "bilevel.pretrain_seg_steps": 5, "bilevel.train_seg": True}, 0.4),
        ("cyclegan", "tiny+cyclegan", {"data.root": "fundus"}, 0.4))

CHILD = r'''
import sys, json, torch
sys.path.insert(0, sys.argv[1]); torch.set_num_threads(1)
from hqg.runs import load_config, train  # hqg.app.runs since the subpackages; the old name is an alias
name, spec, ov, steps, out = json.loads(sys.argv[2])
run = train(load_config(spec, ov), out=out, max_steps=steps, device="cpu", progress=False)
print(run / "metrics.jsonl")
'''

def run(checkout: Path, steps: int, out: Path) -> dict:
    logs = {}
    for name, spec, ov, frac in RUNS:
        ov = {**ov, "data.root": str(checkout / "data_samples" / ov["data.root"]), "train.log_every": 1,
              "train.pretrain_guidance_steps": 10}
        job = json.dumps([name, spec, ov, max(2, int(steps * frac)), str(out / name)])
        p = subprocess.run([sys.executable, "-c", CHILD, str(checkout), job], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        if p.returncode: sys.exit(f"{checkout}: {name} failed:\n{p.stderr[-2000:]}")
        logs[name] = [json.loads(l) for l in Path(p.stdout.strip().splitlines()[-1]).read_text().splitlines()]
    return logs

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path); ap.add_argument("new", type=Path)
    ap.add_argument("--steps", type=int, default=50); ap.add_argument("--tol", type=float, default=1e-6)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        old, new = run(a.old.resolve(), a.steps, Path(d) / "old"), run(a.new.resolve(), a.steps, Path(d) / "new")
    bad = 0
    for name in old:
        keys = [k for k in old[name][0] if k != "s_per_step"]
        same_cols = keys == [k for k in new[name][0] if k != "s_per_step"]
        diff = max((abs(r[k] - s[k]) for r, s in zip(old[name], new[name]) for k in keys
                    if isinstance(r.get(k), (int, float)) and isinstance(s.get(k), (int, float))), default=0.0)
        ok = same_cols and len(old[name]) == len(new[name]) and diff <= a.tol
        bad += not ok
        print(f"{name}: {len(old[name])} rows, columns {'same' if same_cols else 'DIFFER'}, max |difference| {diff:.3g}"
              f" -> {'same' if ok else 'DIFFERENT'}")
    sys.exit(1 if bad else 0)
