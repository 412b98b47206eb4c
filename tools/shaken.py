"""Run the notebook tests as `make test-shaken` asks: one process, a seeded shuffled order (or the sorted one),
a given thread count, `torch.use_deterministic_algorithms` off. State that leaks from one notebook into the
next (seeds, thread counts, global flags) then shows up as a failure here, not on someone else's machine.

    python tools/shaken.py --threads 2 --seed 7      # shuffled order
    python tools/shaken.py --threads 1               # sorted order (as nbdev_test lists them)
"""
import argparse, os, random, sys, time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (default 1)")
    ap.add_argument("--seed", type=int, default=None, help="shuffle the notebook order with this seed (default: sorted)")
    ap.add_argument("--nbs", default="nbs", help="notebook folder (default nbs)")
    ap.add_argument("--flags", default="", help="test flags to run as well, as nbdev_test --flags (default none)")
    a = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import torch
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(False)
    from nbdev.config import get_config
    from nbdev.test import test_nb
    skip = set(get_config().tst_flags.split()) - set(a.flags.split())
    root = Path(a.nbs)  # as nbdev_test: every notebook below nbs/, skipping files and folders named _* or .*
    files = sorted(p for p in root.rglob("*.ipynb")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts))
    if a.seed is not None: random.Random(a.seed).shuffle(files)
    print(f"shaken: {len(files)} notebooks, threads {a.threads}, order "
          f"{'shuffled (seed %d)' % a.seed if a.seed is not None else 'sorted'}, deterministic algorithms off", flush=True)
    failed, t0 = [], time.time()
    for f in files:
        ok, secs = test_nb(f.resolve(), skip_flags=list(skip), basepath=Path.cwd())
        name = f.relative_to(root).as_posix()
        print(f"  {'ok  ' if ok else 'FAIL'} {secs:6.1f} s  {name}", flush=True)
        if not ok: failed.append(name)
    print(f"shaken: {len(files) - len(failed)}/{len(files)} passed in {time.time() - t0:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
