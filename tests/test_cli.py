"""The `hqg` command: lists what works, writes run folders, fails with one clear line."""
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch

from hqg.cli import main, build_parser

ROOT = Path(__file__).resolve().parents[1]
HQG = Path(sys.executable).with_name("hqg")


def test_console_script_help_lists_commands():
    r = subprocess.run([str(HQG), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for cmd in ("train", "enhance", "run", "sweep", "demo", "samples", "bench"):
        assert cmd in r.stdout


def test_demo_smoke_trains_through_papermill_enhances_and_scores(tmp_path):
    from hqg.cli import demo
    run = demo(ROOT / "data_samples", tmp_path, max_steps=2, device="cpu",
               overrides={"train.pretrain_guidance_steps": 1, "data.size": 32, "data.batch_size": 2})
    assert (run / "20_train_hqg.ipynb").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert sorted(p.name for p in (run / "enhanced").iterdir()) == sorted(
        p.name for p in (ROOT / "data_samples/fundus/test/lq").iterdir())
    res = json.loads((run / "results.json").read_text())
    assert res["max_steps"] == 2 and len(res["rows"]) == 4
    for r in res["rows"]:
        assert 5 < r["psnr_lq"] < 40 and 0 < r["ssim_lq"] < 1 and 0 < r["ssim_enh"] < 1
    assert "| **mean** |" in (run / "results.md").read_text()
    assert (run / "grid.png").stat().st_size > 20_000


@pytest.mark.parametrize("argv, needle", [
    (["demo", "--data", "/no/such/folder"], "/no/such/folder"),
])
def test_user_errors_are_one_line(tmp_path, capsys, argv, needle):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hqg: error: ") and needle in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_samples_command_regenerates_a_set(tmp_path, capsys):
    assert main(["samples", "--out", str(tmp_path), "--sets", "ccm"]) == 0
    assert "ccm: 44 files" in capsys.readouterr().out  # 8 hq + 8 hq_masks + 8 lq + 8 masks + 4x3 test
    assert len(list((tmp_path / "ccm").rglob("*.png"))) == 44
    assert len(list((tmp_path / "ccm" / "hq_masks").glob("*.png"))) == 8


def test_bench_wavelets_prints_both_times(capsys):
    assert main(["bench", "wavelets", "--batch", "1", "--image-size", "64", "--repeats", "2"]) == 0
    out = capsys.readouterr().out.lower()
    assert "pywavelets" in out or "pywt" in out
    assert "hqg" in out


def test_bench_generator_prints_params_and_times(capsys):
    assert main(["bench", "generator", "--sizes", "tiny", "--batch", "1", "--image-size", "32", "--repeats", "1",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "M params" in out and "ms" in out


@pytest.fixture
def tiny_ckpt(tmp_path):
    import torch
    from hqg.networks import HQGNet
    torch.manual_seed(0)
    net = HQGNet(3, "tiny")
    net.set_default_guidance(torch.rand(2, 3, 32, 32))
    return net.save_checkpoint(tmp_path / "model.pt")


def _mixed_folder(d):
    import torch
    from hqg.io import write_image
    write_image(d / "rgb8.png", torch.rand(3, 24, 30))
    write_image(d / "rgb16.tif", torch.rand(3, 21, 19), bits=16)
    write_image(d / "gray8.png", torch.rand(1, 16, 16))
    write_image(d / "gray16.png", torch.rand(1, 18, 22), bits=16)
    write_image(d / "photo.jpg", torch.rand(3, 16, 16))
    (d / "broken.tif").write_bytes(b"II*\x00garbage")


def test_enhance_keeps_names_formats_bits_and_reports_corrupt(tmp_path, tiny_ckpt, capsys):
    from hqg.io import image_info
    src = tmp_path / "in"; _mixed_folder(src)
    rc = main(["enhance", "--checkpoint", str(tiny_ckpt), "--input", str(src), "--output", str(tmp_path / "out"),
               "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 1 and "broken.tif" in cap.err and "enhanced 5 image(s)" in cap.out
    for name in ("rgb8.png", "rgb16.tif", "gray8.png", "gray16.png", "photo.jpg"):
        a, b = image_info(src / name), image_info(tmp_path / "out" / name)
        assert (a.format, a.bits, a.channels, a.height, a.width) == (b.format, b.bits, b.channels, b.height, b.width), name
    assert not (tmp_path / "out" / "broken.tif").exists()


def test_enhance_guidance_changes_output_and_fov_border_stays_dark(tmp_path, tiny_ckpt):
    import torch
    from hqg.io import write_image, read_image
    from hqg.degrade import synth_vessels
    img, _ = synth_vessels(64, seed=3)              # whole field of view with a black border
    write_image(tmp_path / "in" / "eye.png", img)
    write_image(tmp_path / "g1.png", torch.rand(3, 32, 32))
    write_image(tmp_path / "g2" / "x.png", torch.full((3, 32, 32), 0.8))
    outs = {}
    for tag, extra in (("default", []), ("g1", ["--guidance", str(tmp_path / "g1.png")]),
                       ("g2", ["--guidance", str(tmp_path / "g2")])):
        assert main(["enhance", "--checkpoint", str(tiny_ckpt), "--input", str(tmp_path / "in"),
                     "--output", str(tmp_path / tag), "--device", "cpu"] + extra) == 0
        outs[tag] = read_image(tmp_path / tag / "eye.png")
    assert (outs["g1"] - outs["g2"]).abs().max() > 1 / 255          # guidance matters
    corner = (slice(None), slice(0, 4), slice(0, 4))
    assert outs["g1"][corner].max() <= img[corner].max() + 1 / 255    # border copied from the input


@pytest.mark.parametrize("what", ["missing", "foreign", "same-folder", "no-input"])
def test_enhance_bad_input_is_one_line(tmp_path, tiny_ckpt, capsys, what):
    import torch
    from hqg.io import write_image
    write_image(tmp_path / "in" / "a.png", torch.rand(3, 16, 16))
    ckpt, inp, out, needle = str(tiny_ckpt), str(tmp_path / "in"), str(tmp_path / "out"), None
    if what == "missing": ckpt = needle = str(tmp_path / "nope.pt")
    if what == "foreign":
        torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt"); ckpt = needle = str(tmp_path / "foreign.pt")
    if what == "same-folder": out, needle = inp, "output folder is an input folder"
    if what == "no-input": inp = needle = str(tmp_path / "nothing")
    assert main(["enhance", "--checkpoint", ckpt, "--input", inp, "--output", out, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hqg: error: ") and needle in err and err.count("\n") == 1


@pytest.mark.parametrize("case", ["missing-data", "empty-data", "unknown-key", "unknown-preset", "resume-nothing",
                                  "resume-data-no-config"])
def test_train_bad_input_is_one_line(tmp_path, capsys, case):
    (tmp_path / "empty").mkdir()
    argv = {"missing-data": ["--data", str(tmp_path / "nope")],
            "empty-data": ["--data", str(tmp_path / "empty")],
            "unknown-key": ["--data", str(ROOT / "data_samples/fundus"), "--set", "loss.lambda_wavlet=1"],
            "unknown-preset": ["--config", "tinyy", "--data", str(ROOT / "data_samples/fundus")],
            "resume-nothing": ["--resume"],
            "resume-data-no-config": ["--resume", "--data", str(ROOT / "data_samples/fundus")]}[case]
    needle = {"missing-data": "nope", "empty-data": "empty", "unknown-key": "lambda_wavlet",
              "unknown-preset": "tinyy", "resume-nothing": str(tmp_path / "runs"),
              "resume-data-no-config": "--config"}[case]
    assert main(["train", "--out", str(tmp_path / "runs"), "--device", "cpu"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hqg: error: ") and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no half-made run folder


def test_run_failing_notebook_exits_nonzero_and_keeps_the_error(tmp_path, capsys):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("raise ValueError(f'bad x={x}')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "fail.ipynb")
    rc = main(["run", str(tmp_path / "fail.ipynb"), "-p", "x", "7", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("hqg: error: ") and err.count("\n") == 1
    (executed,) = (tmp_path / "runs").rglob("fail.ipynb")
    text = executed.read_text()
    assert "bad x=7" in text and "x = 7" in text


def test_bench_training_and_enhance_print_rates(capsys):
    assert main(["bench", "training", "--sizes", "tiny", "--batch", "2", "--image-size", "32", "--repeats", "1"]) == 0
    assert main(["bench", "enhance", "--batch", "2", "--image-size", "32", "--repeats", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "steps/s" in out and "images/s" in out


def test_train_resume_via_cli_is_bitwise_equal_to_a_straight_run(tmp_path):
    import torch
    smoke = ["--set", f"data.root={ROOT / 'data_samples/fundus'}", "data.size=32", "data.batch_size=2",
             "train.pretrain_guidance_steps=0", "train.val_every=null", "train.sample_every=2"]
    base = ["train", "--config", "tiny", "--device", "cpu"]
    assert main(base + ["--out", str(tmp_path / "a"), "--max-steps", "2"] + smoke) == 0
    assert main(["train", "--out", str(tmp_path / "a"), "--max-steps", "4", "--resume", "--device", "cpu"]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--max-steps", "4"] + smoke) == 0
    (a,), (b,) = list((tmp_path / "a").iterdir()), list((tmp_path / "b").iterdir())
    sa = torch.load(a / "checkpoints/last.pt", weights_only=True)
    sb = torch.load(b / "checkpoints/last.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 4
    for net in ("gen", "disc"):
        for k, v in sa["train_state"][net].items():
            assert torch.equal(v, sb["train_state"][net][k]), (net, k)


def test_shipped_default_model_enhances_the_fundus_test_set(tmp_path, capsys):
    """The model in data_samples/models improves PSNR and SSIM on the (held-out views of the) fundus test set."""
    from hqg.cli import score_pairs
    t = ROOT / "data_samples/fundus/test"
    assert main(["enhance", "--input", str(t / "lq"), "--output", str(tmp_path), "--device", "cpu"]) == 0
    rows = score_pairs(t / "lq", tmp_path, t / "gt")
    mean = lambda k: sum(r[k] for r in rows) / len(rows)
    assert mean("psnr_enh") > mean("psnr_lq") + 3 and mean("ssim_enh") > mean("ssim_lq")
    prov = __import__("torch").load(ROOT / "data_samples/models/fundus_tiny.pt", weights_only=True)["provenance"]
    assert prov["step"] == 800 and prov["seed"] == 0 and "make default-model" in prov["command"]


def test_enhance_uncertainty_writes_a_map_beside_each_output(tmp_path, capsys):
    from hqg.io import read_image
    src = ROOT / "data_samples" / "fundus" / "test" / "lq"
    assert main(["enhance", "--input", str(src / "test_01_crop.png"), "--output", str(tmp_path), "--uncertainty", "4",
                 "--device", "cpu"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_01_crop.png", "test_01_crop_uncertainty.tif"]
    u = read_image(tmp_path / "test_01_crop_uncertainty.tif")
    assert u.shape == (1, 192, 192) and u.dtype == torch.float32 and 0 < float(u.mean()) < 0.1
    assert main(["enhance", "--input", str(src), "--output", str(tmp_path / "b"), "--uncertainty", "1"]) == 2
    assert "uncertainty: expected 0 (off) or a number of samples >= 2, got 1" in capsys.readouterr().err
