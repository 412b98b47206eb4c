"""Bad input, one named line each, nothing lost (issue 14, item 6).

One table of bad inputs at the public entry points (tensor API, file API, `hqg` command, configs, checkpoints,
output folders). Each case asserts the error type (or the command's exit status), that the message is one line
naming the file / key / shape and saying what was expected, and, where something could be lost or half-written,
that nothing was."""
import errno, os, re, shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tifffile
import torch

import hqg
from hqg.train.cyclegan import CycleGANTrainer, baseline_loss
from hqg.app.cli import build_parser, enhance_files, main
from hqg.core import check_image
from hqg.data import UnpairedDataset
from hqg.data.io import ImageReadError, read_image, write_image
from hqg.model.losses import HQGLoss
from hqg.model.networks import CKPT_FORMATS, HQGNet
from hqg.app.runs import load_config, train
from hqg.train.loop import CKPT_FORMAT, load_checkpoint
from hqg.train.hqg import Trainer
from hqg.eval.uncertainty import enhance_samples

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data_samples" / "models" / "fundus_tiny.pt"  # tiny preset: min_size 8, min_guide_size 16
DATA = ROOT / "data_samples" / "fundus"
TINY = dict(gen_base=8, gen_max_width=32, disc_base=8, disc_max_width=32, enc_base=8, enc_depth=3,
            enc_max_width=32, latent=16, vnm_hidden=32)
SMOKE = ["--device", "cpu", "--set", f"data.root={DATA}", "data.size=32", "data.batch_size=2",
         "train.pretrain_guidance_steps=0", "train.val_every=null"]  # more KEY=VALUE may follow
NEW = "99.0.0"  # a future hqg version
SKIPPED, ERROR = 1, 2  # exit statuses of `hqg`: an input was skipped (others written) / nothing done


@pytest.fixture(scope="module")
def shipped():
    return HQGNet.from_checkpoint(SHIPPED)


def _trainer(run_dir, cls=Trainer, variant="hqg"):
    torch.manual_seed(0)
    kw = dict(batch_size=2, log_every=0, sample_every=0, ckpt_every=0, progress=False, device="cpu")
    net = HQGNet(3, "tiny", variant=variant, **TINY)
    if cls is CycleGANTrainer:
        return cls(net, baseline_loss("cyclegan", illum_patch_sizes=(8, 16)), UnpairedDataset(DATA, size=32),
                   run_dir=run_dir, r1_gamma=0.0, **kw)
    return cls(net, HQGLoss(), UnpairedDataset(DATA, size=32), run_dir=run_dir, **kw)


@pytest.fixture(scope="module")
def train_ckpts(tmp_path_factory):
    "Step-0 training checkpoints (last.pt) of a tiny HQG-Net run and a tiny CycleGAN run (as `model.method: cyclegan`)."
    d = tmp_path_factory.mktemp("train_ckpts")
    return {"hqg": _trainer(d / "hqg").save_checkpoint(),
            "cyclegan": _trainer(d / "cyc", CycleGANTrainer, variant="deterministic").save_checkpoint()}


class Ctx:
    "What a case gets: its folder, monkeypatch, the shipped model and the training checkpoints (built on demand)."
    def __init__(self, tmp: Path, monkeypatch, request):
        self.tmp, self.mp, self._request, self.calls = tmp, monkeypatch, request, []

    @property
    def net(self) -> HQGNet: return self._request.getfixturevalue("shipped")

    @property
    def ckpts(self) -> dict: return self._request.getfixturevalue("train_ckpts")

    def img(self, name: str, x: torch.Tensor, **kw) -> Path: return write_image(self.tmp / name, x, **kw)

    def tiff(self, name: str, value: float) -> Path:
        "A 16x16 float32 TIFF filled with `value`."
        tifffile.imwrite(self.tmp / name, np.full((16, 16), value, np.float32)); return self.tmp / name

    def file(self, name: str, text: str) -> Path:
        p = self.tmp / name; p.parent.mkdir(parents=True, exist_ok=True); p.write_text(text); return p

    def ckpt_copy(self, src: Path, name: str, **changes) -> Path:
        "A copy of checkpoint `src` with top-level keys changed (model_config entries via `model_config=dict(...)`)."
        ck = torch.load(src, map_location="cpu", weights_only=True)
        mc = changes.pop("model_config", {})
        ck.update(changes); ck["model_config"] = {**ck["model_config"], **mc}
        p = self.tmp / name; torch.save(ck, p); return p

    def deny_writes(self, folder: Path) -> Path:
        "Simulate a read-only `folder` (chmod does not stop root): creating files or folders in it fails with EACCES."
        folder.mkdir(parents=True, exist_ok=True)
        inside = lambda p: Path(p).resolve().parent == folder.resolve() or folder.resolve() in Path(p).resolve().parents
        deny = lambda p: PermissionError(errno.EACCES, "Permission denied", str(p))
        real_open, real_mkdir = os.open, Path.mkdir
        def os_open(p, flags, *a, **k):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(p): raise deny(p)
            return real_open(p, flags, *a, **k)
        def mkdir(self, *a, **k):
            if inside(self) and self.resolve() != folder.resolve(): raise deny(self)
            return real_mkdir(self, *a, **k)
        def builtin_open(p, mode="r", *a, **k):
            if any(m in mode for m in "wax+") and inside(p): raise deny(p)
            return open(p, mode, *a, **k)
        self.mp.setattr(os, "open", os_open)
        self.mp.setattr(Path, "mkdir", mkdir)
        self.mp.setattr(hqg.model.networks, "open", builtin_open, raising=False)  # HQGNet.save_checkpoint's open()
        return folder

    def disk_full_in_torch_save(self):
        "Simulate a full disk: torch.save writes part of the file, then fails with ENOSPC."
        def save(obj, f, *a, **k):
            fh = f if hasattr(f, "write") else open(f, "wb")
            fh.write(b"PK\x03\x04 partial"); fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        self.mp.setattr(torch, "save", save)


def cli(*argv) -> int:
    return main([str(a) for a in argv])


def enhance_cli(c: Ctx, *extra, inp=None, out=None) -> int:
    inp = inp or c.img("in/a.png", torch.rand(3, 32, 32))
    return cli("enhance", "--input", inp, "--output", out or c.tmp / "out", "--device", "cpu", *extra)


def nan_image(shape=(1, 3, 32, 32), value=float("nan")):
    x = torch.rand(shape); x.view(-1)[37] = value; return x


def no_output(c: Ctx):
    out = c.tmp / "out"
    assert not out.exists() or not any(out.iterdir())


def no_run_folder(c: Ctx):
    runs = c.tmp / "runs"
    assert not runs.exists() or not any(runs.iterdir())


# ---------------------------------------------------------------------------------------------------- the table

@dataclass
class Case:
    id: str
    run: Callable  # run(ctx): raises (API), or returns the `hqg` exit status (CLI)
    error: type | int  # the exception type, or the exit status: ERROR (2) or SKIPPED (1)
    match: str | Callable  # regex on the message / the one `hqg:` line; "{tmp}" = the case's folder; or ctx -> regex
    after: Callable | None = None  # ctx -> None: nothing lost or half-written

    def regex(self, c: Ctx) -> str:
        m = self.match(c) if callable(self.match) else self.match
        return m.replace("{tmp}", re.escape(str(c.tmp)))


def _setup_readonly_cli(c):
    c.deny_writes(c.tmp / "ro")
    return enhance_cli(c, out=c.tmp / "ro")


def _chmod_readonly_cli(c):
    (c.tmp / "ro").mkdir(); os.chmod(c.tmp / "ro", 0o555)
    try: return enhance_cli(c, out=c.tmp / "ro")
    finally: os.chmod(c.tmp / "ro", 0o755)


def _ckpt_enospc(c):
    net = c.net
    c.old = net.save_checkpoint(c.tmp / "ck" / "net.pt").read_bytes()
    c.disk_full_in_torch_save()
    net.save_checkpoint(c.tmp / "ck" / "net.pt")


def _ckpt_enospc_after(c):
    c.mp.undo()
    assert sorted(p.name for p in (c.tmp / "ck").iterdir()) == ["net.pt"]     # no temporary file left
    assert (c.tmp / "ck" / "net.pt").read_bytes() == c.old                     # exact: the previous file's bytes
    assert HQGNet.from_checkpoint(c.tmp / "ck" / "net.pt").min_size == 8       # ... and it still loads


def _image_enospc(c):
    "A full disk that shows at fsync (delayed allocation): the new image never replaces the old one."
    c.old = c.img("out/a.png", torch.rand(3, 8, 8)).read_bytes()
    def fsync(fd): raise OSError(errno.ENOSPC, "No space left on device")
    c.mp.setattr(os, "fsync", fsync)
    write_image(c.tmp / "out" / "a.png", torch.rand(3, 8, 8))


def _image_enospc_after(c):
    c.mp.undo()
    assert [p.name for p in (c.tmp / "out").iterdir()] == ["a.png"] and (c.tmp / "out" / "a.png").read_bytes() == c.old


def _trainer_enospc(c):
    tr = _trainer(c.tmp / "run")
    tr.save_checkpoint()
    c.disk_full_in_torch_save()
    tr.save_checkpoint()


def _load_into(c, ckpt, cls=Trainer):
    _trainer(c.tmp / "resume", cls).load_state(ckpt)


def _evil_yaml(c, via_cli=False):
    c.mp.setattr(os, "system", lambda cmd: c.calls.append(cmd) or 0)
    p = c.file("evil.yaml", "base: tiny\ntrain: !!python/object/apply:os.system ['echo pwned']\n")
    return cli("train", "--config", p, "--out", c.tmp / "runs", *SMOKE) if via_cli else load_config(str(p))


def _nothing_ran(c):
    assert c.calls == [] and not (c.tmp / "runs").exists()


def _resume_model_file(c):
    ck = c.tmp / "runs" / "r1" / "checkpoints"
    ck.mkdir(parents=True); shutil.copy(SHIPPED, ck / "last.pt")
    return cli("train", "--out", c.tmp / "runs", "--resume", "--device", "cpu")


def _run_folder_unchanged(c):
    got = sorted(str(p.relative_to(c.tmp / "runs")) for p in (c.tmp / "runs").rglob("*"))
    assert got == ["r1", "r1/checkpoints", "r1/checkpoints/last.pt"], got
    assert (c.tmp / "runs/r1/checkpoints/last.pt").read_bytes() == SHIPPED.read_bytes()


ROOT_CHMOD = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                                reason="root ignores chmod; the simulated read-only cases cover this")

CASES = [
    # 1. NaN/Inf pixels: refused at the model's public entry, named, with what was expected
    Case("nan-pixels/enhance", lambda c: c.net.enhance(nan_image()), ValueError,
         r"^x_lq: expected finite values in \[0,1\], got 1 NaN and 0 infinite value\(s\) in shape \(1, 3, 32, 32\)$"),
    Case("inf-guidance/enhance", lambda c: c.net.enhance(torch.rand(1, 3, 32, 32), nan_image(value=float("inf"))),
         ValueError, r"^guidance: expected finite values in \[0,1\], got 0 NaN and 1 infinite value\(s\) in shape "
                     r"\(1, 3, 32, 32\)$"),
    Case("nan-code/enhance", lambda c: c.net.enhance(torch.rand(1, 3, 32, 32), code=torch.full((64,), float("nan"))),
         ValueError, r"^code: expected finite values, got NaN or Inf$"),
    Case("nan-pixels/check_image", lambda c: check_image(nan_image(), name="x_hq", check_range=True), ValueError,
         r"^x_hq: expected finite values in \[0,1\], got 1 NaN"),
    Case("nan-pixels/enhance_samples", lambda c: enhance_samples(c.net, nan_image(), n=2), ValueError,
         r"^x_lq: expected finite values in \[0,1\], got 1 NaN"),
    Case("nan-pixels/write_image", lambda c: write_image(c.tmp / "out" / "a.png", nan_image()[0]), ValueError,
         r"^x: expected finite values in \[0,1\], got 1 NaN and 0 infinite value\(s\) in shape \(3, 32, 32\)$", no_output),
    Case("nan-pixels/hqg enhance float TIFF", lambda c: enhance_cli(c, inp=c.tiff("nan.tif", np.nan)), SKIPPED,
         r"^hqg: skipped {tmp}/nan\.tif: cannot read image '{tmp}/nan\.tif': contains NaN or infinite values; "
         r"expected finite samples$", no_output),
    # 2. zero-size and 1x1 images; 3. smaller than the model's minimum (the shipped tiny model: 8 px, guides 16 px)
    Case("1x1/enhance", lambda c: c.net.enhance(torch.rand(3, 1, 1)), ValueError,
         r"^x_lq: expected H and W of at least 8, got shape \(3, 1, 1\)$"),
    Case("0x0/enhance", lambda c: c.net.enhance(torch.rand(2, 3, 0, 0)), ValueError,
         r"^x_lq: expected H and W of at least 8, got shape \(2, 3, 0, 0\)$"),
    Case("1x1/hqg enhance PNG", lambda c: enhance_cli(c, inp=c.img("dot.png", torch.rand(3, 1, 1))), SKIPPED,
         r"^hqg: skipped {tmp}/dot\.png: image is 1x1 pixels \(width x height\); this model needs at least 8x8 "
         r"\(HQGNet\.min_size\)$", no_output),
    Case("5x5/enhance", lambda c: c.net.enhance(torch.rand(1, 3, 5, 5)), ValueError,
         r"^x_lq: expected H and W of at least 8, got shape \(1, 3, 5, 5\)$"),
    Case("5x5/enhance_samples", lambda c: enhance_samples(c.net, torch.rand(3, 7, 64), n=2), ValueError,
         r"^x_lq: expected H and W of at least 8, got shape \(3, 7, 64\)$"),
    Case("5x5-guide/enhance", lambda c: c.net.enhance(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 5, 5)), ValueError,
         r"^guidance: expected H and W of at least 16, got shape \(1, 3, 5, 5\)$"),
    Case("5x5-guide/hqg enhance", lambda c: enhance_cli(c, "--guidance", c.img("small.png", torch.rand(3, 5, 5))), ERROR,
         r"^hqg: error: {tmp}/small\.png: guidance: expected H and W of at least 16, got shape \(1, 3, 5, 5\)$", no_output),
    # 4. guide channels differ from the model's (files are converted, documented: see the test below)
    Case("gray-guide/enhance", lambda c: c.net.enhance(torch.rand(1, 3, 32, 32), torch.rand(1, 1, 32, 32)), ValueError,
         r"^guidance: expected 3 channels in \(B,C,H,W\), got shape \(1, 1, 32, 32\)$"),
    Case("gray-input/enhance", lambda c: c.net.enhance(torch.rand(1, 32, 32)), ValueError,
         r"^x_lq: expected 3 channels in \(B,C,H,W\), got shape \(1, 1, 32, 32\)$"),
    # 5. a missing guide file
    Case("missing-guide/hqg enhance", lambda c: enhance_cli(c, "--guidance", c.tmp / "nope.png"), ERROR,
         r"^hqg: error: guidance: {tmp}/nope\.png does not exist \(expected an HQ image file or a folder of them\)$", no_output),
    Case("missing-guide/enhance_files", lambda c: enhance_files(c.net, c.img("in/a.png", torch.rand(3, 32, 32)),
                                                               c.tmp / "out", guidance=c.tmp / "nope.png", device="cpu"),
         FileNotFoundError, r"^guidance: {tmp}/nope\.png does not exist \(expected an HQ image file or a folder of them\)$", no_output),
    Case("guide-path/enhance", lambda c: c.net.enhance(torch.rand(1, 3, 32, 32), str(c.tmp / "nope.png")), TypeError,
         r"^guidance: expected HQ image tensor\(s\), got the path '{tmp}/nope\.png'; read it with hqg\.data\.io\.read_image"),
    Case("missing-image/read_image", lambda c: read_image(c.tmp / "nope.png"), ImageReadError,
         r"^cannot read image '{tmp}/nope\.png': file not found$"),
    # 6. unknown config keys and wrong-typed values: overrides, YAML files, the command line
    Case("unknown-key/load_config", lambda c: load_config("tiny", {"train.bogus": 1}), ValueError,
         r"^overrides: unknown key 'bogus' in section 'train'; valid keys: max_steps, lr_decay_start, ema_decay, "),
    Case("unknown-section/load_config", lambda c: load_config("tiny", {"trian.lr_g": 1e-4}), ValueError,
         r"^overrides: unknown section 'trian' in 'trian\.lr_g'; valid sections: data, model, loss, train"),
    Case("wrong-type/load_config", lambda c: load_config("tiny", {"train.lr_g": "abc"}), ValueError,
         r"^overrides: train\.lr_g: expected a number, got 'abc' \(str\)$"),
    Case("unknown-key/YAML", lambda c: load_config(str(c.file("bad.yaml", "base: tiny\ntrain:\n  bogus: 1\n"))),
         ValueError, r"^{tmp}/bad\.yaml: unknown key 'bogus' in section 'train'; valid keys: max_steps, "),
    Case("wrong-type/YAML", lambda c: load_config(str(c.file("bad.yaml", "base: tiny\ntrain:\n  lr_g: abc\n"))),
         ValueError, r"^{tmp}/bad\.yaml: train\.lr_g: expected a number, got 'abc' \(str\)$"),
    Case("wrong-type/hqg train --set", lambda c: cli("train", "--out", c.tmp / "runs", *SMOKE, "train.lr_g=abc"), ERROR,
         r"^hqg: error: overrides: train\.lr_g: expected a number, got 'abc' \(str\)$", no_run_folder),
    Case("wrong-type/hqg train YAML", lambda c: cli("train", "--config", c.file("bad.yaml", "train:\n  max_steps: many\n"),
                                                   "--out", c.tmp / "runs", *SMOKE), ERROR,
         r"^hqg: error: {tmp}/bad\.yaml: train\.max_steps: expected an int, got 'many' \(str\)$", no_run_folder),
    Case("out-of-range/hqg train --set", lambda c: cli("train", "--out", c.tmp / "runs", *SMOKE, "data.lq_veil=1.5"), ERROR,
         r"^hqg: error: data\.lq_veil: expected a strength in \[0, 1\), got 1\.5$", no_run_folder),
    Case("bad-schedule/hqg train --set", lambda c: cli("train", "--out", c.tmp / "runs", *SMOKE, 'loss.schedule={"guide": [[0, 4], [0, 1]]}'),
         ERROR, r"^hqg: error: overrides: loss\.schedule\.guide: expected a list of \[step, weight\] pairs \(steps >= 0 "
                r"increasing, weights >= 0\), got \[\[0, 4\], \[0, 1\]\]$", no_run_folder),
    # 7. YAML with a python tag: refused by the safe loader, the file named, nothing executed
    Case("python-tag/YAML", _evil_yaml, ValueError,
         r"^{tmp}/evil\.yaml: not valid YAML: could not determine a constructor for the tag "
         r"'tag:yaml\.org,2002:python/object/apply:os\.system'", _nothing_ran),
    Case("python-tag/hqg train", lambda c: _evil_yaml(c, via_cli=True), ERROR,
         r"^hqg: error: {tmp}/evil\.yaml: not valid YAML: could not determine a constructor", _nothing_ran),
    # 8. a checkpoint of another method or preset where a tiny HQG-Net run is expected
    Case("cyclegan-ckpt/Trainer.load_state", lambda c: _load_into(c, c.ckpts["cyclegan"]), ValueError,
         lambda c: rf"^{re.escape(str(c.ckpts['cyclegan']))}: the checkpoint's model_config differs from this trainer's "
                   r"net in \['variant'\]: \{'variant': 'deterministic'\} vs \{'variant': 'hqg'\}$"),
    Case("hqg-ckpt/CycleGANTrainer.load_state", lambda c: _load_into(c, c.ckpts["hqg"], CycleGANTrainer), ValueError,
         lambda c: rf"^{re.escape(str(c.ckpts['hqg']))}: not a CycleGAN checkpoint \(no train_state\.gen_lq/disc_lq\)"),
    Case("paper-ckpt/Trainer.load_state", lambda c: _load_into(c, c.ckpt_copy(c.ckpts["hqg"], "paper.pt",
                                                                                model_config={"size": "paper"})),
         ValueError, r"^{tmp}/paper\.pt: the checkpoint's model_config differs from this trainer's net in \['size'\]: "
                     r"\{'size': 'paper'\} vs \{'size': 'tiny'\}$"),
    Case("model-file/hqg train --resume", _resume_model_file, ERROR,
         r"^hqg: error: {tmp}/runs/r1/checkpoints/last\.pt: a model-only checkpoint \(HQGNet\.save_checkpoint\): it can "
         r"enhance images \(HQGNet\.from_checkpoint\) but holds no training state to resume from$", _run_folder_unchanged),
    # 9. a checkpoint from a newer hqg (the version keys: "hqg_version", and "format" of exported/training files)
    Case("newer-version/from_checkpoint", lambda c: HQGNet.from_checkpoint(c.ckpt_copy(
        SHIPPED, "newer.pt", hqg_version=NEW, model_config={"gen_attention": True})), ValueError,
         rf"^{{tmp}}/newer\.pt: checkpoint does not fit its model_config \(written by hqg {re.escape(NEW)}, newer than "
         rf"this hqg {re.escape(hqg.__version__)}: upgrade hqg to read it\): "),
    Case("newer-format/from_checkpoint", lambda c: HQGNet.from_checkpoint(c.ckpt_copy(
        SHIPPED, "v2.pt", hqg_version=NEW, format="hqg-model-v2")), ValueError,
         r"^{tmp}/v2\.pt: unknown checkpoint format 'hqg-model-v2' \(written by hqg 99\.0\.0, newer than this hqg .*\); "
         r"this hqg reads \['hqg-model', 'hqg-train'\] \(or no format key\)$"),
    Case("newer-format/hqg enhance", lambda c: enhance_cli(c, "--checkpoint", c.ckpt_copy(
        SHIPPED, "v2.pt", hqg_version=NEW, format="hqg-model-v2")), ERROR,
         r"^hqg: error: {tmp}/v2\.pt: unknown checkpoint format 'hqg-model-v2' \(written by hqg 99\.0\.0", no_output),
    Case("newer-format/Trainer.load_state", lambda c: _load_into(c, c.ckpt_copy(
        c.ckpts["hqg"], "v2.pt", hqg_version=NEW, format="hqg-train-v2")), ValueError,
        r"^{tmp}/v2\.pt: not an hqg training checkpoint \(written by hqg 99\.0\.0, newer than this hqg .*\): expected "
        r"a dict with format='hqg-train', got format='hqg-train-v2'$"),
    Case("newer-version/Trainer.load_state", lambda c: _load_into(c, c.ckpt_copy(
        c.ckpts["hqg"], "newer.pt", hqg_version=NEW)), ValueError,
        r"^{tmp}/newer\.pt: written by hqg 99\.0\.0, newer than this hqg"),
    # 10. an output folder that is a file
    Case("out-is-file/hqg enhance", lambda c: enhance_cli(c, out=c.file("somefile", "keep")), ERROR,
         r"^hqg: error: {tmp}/somefile: output folder is a file; expected a folder \(it is created if missing\)$",
         lambda c: (c.tmp / "somefile").read_text() == "keep" or pytest.fail("somefile was changed")),
    Case("out-is-file/enhance_files", lambda c: enhance_files(c.net, c.img("in/a.png", torch.rand(3, 32, 32)),
                                                             c.file("somefile", "keep"), device="cpu"), ValueError,
         r"^{tmp}/somefile: output folder is a file; expected a folder"),
    Case("out-is-file/write_image", lambda c: write_image(c.file("somefile", "keep") / "a.png", torch.rand(3, 8, 8)),
         OSError, r"^\[Errno \d+\] cannot write '{tmp}/somefile/a\.png': '{tmp}/somefile' \(or a folder above it\) is a "
                  r"file; expected a folder$"),
    Case("out-is-file/save_checkpoint", lambda c: c.net.save_checkpoint(c.file("somefile", "keep") / "sub" / "net.pt"),
         OSError, r"^\[Errno \d+\] cannot write '{tmp}/somefile/sub/net\.pt': '{tmp}/somefile/sub' \(or a folder above "
                  r"it\) is a file; expected a folder$"),
    Case("out-is-file/hqg train", lambda c: cli("train", "--out", c.file("somefile", "keep"), *SMOKE), ERROR,
         r"^hqg: error: --out {tmp}/somefile: is a file; expected a folder for the run folders"),
    Case("out-is-file/runs.train", lambda c: train(
        load_config("tiny", {"data.root": str(DATA), "data.size": 32, "train.pretrain_guidance_steps": 0}),
        c.file("somefile", "keep"), max_steps=1, device="cpu", progress=False), ValueError,
        r"{tmp}/somefile: is a file; expected a folder for the run folders"),
    # 11. a read-only output folder (simulated: root ignores chmod; the chmod variant runs as a normal user)
    Case("read-only/hqg enhance (simulated)", _setup_readonly_cli, ERROR,
         r"^hqg: error: \[Errno 13\] cannot write '{tmp}/ro/a\.png': permission denied in '{tmp}/ro'; expected a "
         r"writable folder$", lambda c: list((c.tmp / "ro").iterdir()) == [] or pytest.fail("ro/ is not empty")),
    pytest.param(Case("read-only/hqg enhance (chmod)", _chmod_readonly_cli, ERROR,
                      r"^hqg: error: \[Errno 13\] cannot write '{tmp}/ro/a\.png': permission denied in '{tmp}/ro'; "
                      r"expected a writable folder$"), marks=ROOT_CHMOD),
    Case("read-only/write_image", lambda c: write_image(c.deny_writes(c.tmp / "ro") / "a.png", torch.rand(3, 8, 8)),
         PermissionError, r"^\[Errno 13\] cannot write '{tmp}/ro/a\.png': permission denied in '{tmp}/ro'; expected a "
                          r"writable folder$"),
    Case("read-only/save_checkpoint", lambda c: c.net.save_checkpoint(c.deny_writes(c.tmp / "ro") / "net.pt"),
         PermissionError, r"^\[Errno 13\] cannot write '{tmp}/ro/net\.pt': permission denied in '{tmp}/ro'; expected "
                          r"a writable folder$"),
    Case("read-only/hqg train", lambda c: cli("train", "--out", c.deny_writes(c.tmp / "ro"), *SMOKE), ERROR,
         r"^hqg: error: \[Errno 13\] .*'?{tmp}/ro\b"),
    # 12. a full disk during a write: the error names the path; the previous file is intact; no temporary file
    Case("disk-full/save_checkpoint", _ckpt_enospc, OSError,
         r"^\[Errno 28\] cannot write '{tmp}/ck/net\.pt': No space left on device \(in '{tmp}/ck'\); nothing was "
         r"written$", _ckpt_enospc_after),
    Case("disk-full/write_image", _image_enospc, OSError,
         r"^\[Errno 28\] cannot write '{tmp}/out/a\.png': No space left on device \(in '{tmp}/out'\); nothing was "
         r"written$", _image_enospc_after),
    Case("disk-full/Trainer.save_checkpoint", _trainer_enospc, OSError,
                      r"^\[Errno 28\] cannot write '{tmp}/run/checkpoints/last\.pt': No space left on device"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id.replace(" ", "_"))
def test_bad_input_is_one_named_line(case, tmp_path, monkeypatch, request, capsys):
    c = Ctx(tmp_path, monkeypatch, request)
    if isinstance(case.error, int):  # the `hqg` command: an exit status and exactly one `hqg:` line on stderr
        rc = case.run(c)
        err = capsys.readouterr().err
        assert rc == case.error, err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("hqg: "), err
        assert re.search(case.regex(c), lines[0]), (case.regex(c), lines[0])
    else:
        with pytest.raises(case.error) as ei:
            case.run(c)
        msg = str(ei.value)
        assert "\n" not in msg, msg
        assert re.search(case.regex(c), msg), (case.regex(c), msg)
    if case.after: case.after(c)


# ---------------------------------------------------------------------------------------------------- beside the table

def test_gray_guide_file_is_converted_like_the_inputs(tmp_path, capsys):
    "Documented (26_app_cli; `hqg enhance --help`): a gray guide for the RGB model acts as itself repeated to RGB."
    write_image(tmp_path / "in" / "a.png", torch.rand(3, 32, 32))
    write_image(tmp_path / "gray.png", torch.rand(1, 32, 32))
    write_image(tmp_path / "rgb.png", read_image(tmp_path / "gray.png").expand(3, -1, -1))
    for g in ("gray", "rgb"):
        assert cli("enhance", "--input", tmp_path / "in", "--output", tmp_path / g, "--guidance", tmp_path / f"{g}.png",
                   "--device", "cpu") == 0
    # exact: the same guide pixels reach the encoder (a copy, no arithmetic), so the 8-bit outputs are the same
    assert (tmp_path / "gray" / "a.png").read_bytes() == (tmp_path / "rgb" / "a.png").read_bytes()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["enhance", "--help"])
    assert "converted to the model's channels" in " ".join(capsys.readouterr().out.split())


def test_newer_checkpoint_of_a_known_layout_still_loads(tmp_path, shipped):
    "Only what a version cannot read fails: a newer file whose layout this hqg knows loads and enhances as before."
    ck = torch.load(SHIPPED, weights_only=True); ck["hqg_version"] = NEW
    torch.save(ck, tmp_path / "newer.pt")
    x = torch.rand(1, 3, 32, 32)
    # exact: the same weights, the same input, one process
    assert torch.equal(HQGNet.from_checkpoint(tmp_path / "newer.pt").enhance(x), shipped.enhance(x))
    assert CKPT_FORMAT in CKPT_FORMATS and ck["format"] in CKPT_FORMATS  # the formats from_checkpoint reads


def test_full_disk_during_a_training_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    "The trainer's checkpoint write fails with ENOSPC: last.pt still loads with its old step, no temporary file."
    tr = _trainer(tmp_path / "run")
    last = tr.save_checkpoint()
    old = last.read_bytes()
    tr.step = 7  # a later state that never reaches the disk
    Ctx(tmp_path, monkeypatch, None).disk_full_in_torch_save()
    with pytest.raises(OSError) as ei:
        tr.save_checkpoint()
    assert ei.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt"]
    assert last.read_bytes() == old and load_checkpoint(last)["step"] == 0  # exact: the previous file, untouched
