"""SIGKILL `hqg train` inside its checkpoint saves, many times: the last checkpoint always loads, `--resume` goes on.

Each round starts `hqg train` (the first fresh, the others `--resume`), waits for a checkpoint write to begin, and
kills the process with SIGKILL at a seeded random moment inside it: while the temporary file is being written, or
just before the `os.replace` that moves it (or the hard link to it) onto its real name. After every kill
`checkpoints/last.pt` must load with `weights_only=True` (`hqg.train.loop.load_checkpoint`), its step never goes
back, and every kept `step_*.pt` loads too. Finally a `--resume` run completes, leaves no temporary files and a
metrics log with every step once.

Speed (2 CPU cores): a fresh Python process pays ~3 s to import hqg and ~2.5 s more for `torch._dynamo` (imported
lazily by the first optimizer). So the rounds are forked from one warm helper process (a fork server) instead of
started cold; each child runs exactly `hqg.app.cli.main(["train", ...])`. Test-only, in the child: checkpoint writes
go out in 8 chunks over 0.25 s and renames onto *.pt wait 0.05 s, each announced on stdout, so that kills land
inside saves on purpose rather than by luck. The library has no test hooks.
"""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from hqg.train.loop import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data_samples" / "fundus"
KILLS = 6  # rounds, see `plan` below
WRITE_S, RENAME_S = 0.25, 0.05  # how long the child's checkpoint write and its pause before a rename last

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the fork server needs os.fork (POSIX)")

FORK_SERVER = r'''
import io, json, os, sys, time, traceback
import torch, torch._dynamo  # noqa: F401  (the optimizers import torch._dynamo lazily: pay it once, before forking)
import hqg.app.cli, hqg.app.runs, hqg.train.loop, hqg.eval.classical  # noqa: F401
torch.set_num_threads(1)

def slow_checkpoint_io(write_s, rename_s):
    "Test-only: torch.save writes its bytes in 8 chunks over write_s; renames onto *.pt wait rename_s. Both announced."
    save, replace = torch.save, os.replace
    def slow_save(obj, f, *a, **k):
        buf = io.BytesIO(); save(obj, buf, *a, **k); data = buf.getvalue()
        print(f"@@SAVE@@ {getattr(f, 'name', f)}", flush=True)
        fh = f if hasattr(f, "write") else open(f, "wb")
        try:
            for i in range(8):
                fh.write(data[i * len(data) // 8:(i + 1) * len(data) // 8]); fh.flush(); time.sleep(write_s / 8)
        finally:
            if fh is not f: fh.close()
    def slow_replace(src, dst, *a, **k):
        if str(dst).endswith(".pt"): print(f"@@REPLACE@@ {dst}", flush=True); time.sleep(rename_s)
        return replace(src, dst, *a, **k)
    torch.save, os.replace = slow_save, slow_replace

for line in sys.stdin:
    job = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        rc = 99
        try:
            fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1); os.dup2(fd, 2); os.close(fd)
            slow_checkpoint_io(job["write_s"], job["rename_s"])
            rc = hqg.app.cli.main(job["argv"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush(); sys.stderr.flush(); os._exit(rc)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print("EXIT", os.waitstatus_to_exitcode(status), flush=True)
'''

SETTINGS = ["--device", "cpu", "--set", f"data.root={DATA}", "data.size=32", "data.batch_size=2", "data.val=false",
            "train.pretrain_guidance_steps=0", "train.val_every=null", "train.ckpt_every=1", "train.log_every=1",
            "train.sample_every=1000", "train.keep_checkpoints=2",
            "model.overrides={gen_base: 8, gen_max_width: 32, disc_base: 8, disc_max_width: 32, enc_base: 8, "
            "enc_depth: 3, enc_max_width: 32, latent: 16, vnm_hidden: 32}"]


class ForkServer:
    "A warm Python (hqg, torch and torch._dynamo imported) that forks one `hqg` child per job and reports its exit."
    def __init__(self, cwd: Path):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=cwd)
        self.child = None

    def start(self, argv: list, log: Path) -> int:
        job = dict(argv=[str(a) for a in argv], log=str(log), write_s=WRITE_S, rename_s=RENAME_S)
        self.proc.stdin.write(json.dumps(job) + "\n"); self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), f"fork server failed: {line!r}"
        self.child = int(line)
        return self.child

    def exit_status(self) -> int:
        "Wait for the running child's exit (reaped by the server) and return its status (-9: SIGKILL)."
        words = self.proc.stdout.readline().split()
        assert words[:1] == ["EXIT"], words
        self.child = None
        return int(words[1])

    def child_alive(self) -> bool:
        try: os.kill(self.child, 0); return True
        except ProcessLookupError: return False

    def close(self):
        if self.child is not None and self.child_alive(): os.kill(self.child, signal.SIGKILL)  # our own child only
        try:
            self.proc.stdin.close(); self.proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill(); self.proc.wait()


def _wait_for_marker(server: ForkServer, log: Path, kind: str, n: int, timeout: float = 90.0) -> None:
    "Block until the child has printed its n-th `kind` marker (SAVE or REPLACE)."
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text() if log.exists() else ""
        if text.count(f"@@{kind}@@") >= n: return  # (a marker may follow tqdm's bar on the same line)
        if not server.child_alive() or time.monotonic() > deadline:
            pytest.fail(f"no {kind} #{n} from the training child; its log ends with:\n{text[-3000:]}")
        time.sleep(0.003)


def test_sigkill_inside_checkpoint_saves_keeps_last_pt_loadable_and_resume_continues(tmp_path):
    rng = random.Random(14)
    out = tmp_path / "runs"
    server = ForkServer(tmp_path)
    # where each round kills: after the n-th announced write (SAVE) or rename (REPLACE) of that process began;
    # REPLACE 1 / 3 move a step file into place, REPLACE 2 / 4 move the hard link to it onto last.pt
    plan = [("SAVE", 1), ("REPLACE", 1), ("REPLACE", 2), ("SAVE", 2), ("REPLACE", 4)]
    rng.shuffle(plan)
    plan = [("SAVE", 2)] + plan  # first round: the first checkpoint (step 1) is complete, so there is a last.pt to keep
    steps, killed_in_save, where = [], 0, []
    try:
        for k in range(KILLS):
            log = tmp_path / f"round{k}.log"
            first = ["train", "--config", "tiny", "--out", out, "--max-steps", 1000, *SETTINGS]
            resume = ["train", "--out", out, "--resume", "--max-steps", 1000, "--device", "cpu"]
            server.start(first if k == 0 else resume, log)
            kind, n = plan[k]
            _wait_for_marker(server, log, kind, n)
            time.sleep(rng.uniform(0.02, 0.8 * WRITE_S) if kind == "SAVE" else rng.uniform(0.0, 0.6 * RENAME_S))
            os.kill(server.child, signal.SIGKILL)
            assert server.exit_status() == -signal.SIGKILL, log.read_text()[-3000:]

            (run,) = out.iterdir()
            ckdir = run / "checkpoints"
            left = sorted(ckdir.glob(".*.tmp"))  # left by the killed writer: the kill hit a write or a rename
            killed_in_save += bool(left)
            full = (ckdir / "last.pt").stat().st_size
            where.append(f"{kind}#{n}: " + ", ".join(
                f"{p.name.split('.')[1]} ({'partial' if p.stat().st_size < full else 'complete'})" for p in left))
            ck = load_checkpoint(ckdir / "last.pt")  # weights_only=True; raises on a truncated or foreign file
            assert torch.load(ckdir / "last.pt", map_location="cpu", weights_only=True)["step"] == ck["step"]
            assert ck["step"] >= (steps[-1] if steps else 1), (steps, ck["step"])
            for p in ckdir.glob("step_*.pt"): load_checkpoint(p)  # every kept step file is complete too
            steps.append(ck["step"])

        final = steps[-1] + 2
        server.start(["train", "--out", out, "--resume", "--max-steps", final, "--device", "cpu"], tmp_path / "final.log")
        assert server.exit_status() == 0, (tmp_path / "final.log").read_text()[-3000:]
    finally:
        server.close()

    print(f"steps of last.pt after each kill: {steps}; temporary files left by each kill: {where}")
    assert killed_in_save >= KILLS // 2, f"only {killed_in_save} of {KILLS} kills landed inside a checkpoint write"
    ckdir = run / "checkpoints"
    assert load_checkpoint(ckdir / "last.pt")["step"] == final
    assert not list(ckdir.glob(".*.tmp"))  # the resumed run removed what the killed writers left
    rows = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, final + 1))  # every step logged once: rows after a kill's checkpoint were dropped
