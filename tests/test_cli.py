"""The `hqg` command: lists what works, writes run folders, fails with one clear line."""
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch

from hqg.app.cli import main, build_parser

ROOT = Path(__file__).resolve().parents[1]
HQG = Path(sys.executable).with_name("hqg")


def test_console_script_help_lists_commands():
    r = subprocess.run([str(HQG), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for cmd in ("train", "enhance", "run", "sweep", "demo", "samples", "bench"):
        assert cmd in r.stdout


def test_demo_smoke_trains_through_papermill_enhances_and_scores(tmp_path):
    from hqg.app.cli import demo
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
    from hqg.model.networks import HQGNet
    torch.manual_seed(0)
    net = HQGNet(3, "tiny")
    net.set_default_guidance(torch.rand(2, 3, 32, 32))
    return net.save_checkpoint(tmp_path / "model.pt")


def _mixed_folder(d):
    import torch
    from hqg.data.io import write_image
    write_image(d / "rgb8.png", torch.rand(3, 24, 30))
    write_image(d / "rgb16.tif", torch.rand(3, 21, 19), bits=16)
    write_image(d / "gray8.png", torch.rand(1, 16, 16))
    write_image(d / "gray16.png", torch.rand(1, 18, 22), bits=16)
    write_image(d / "photo.jpg", torch.rand(3, 16, 16))
    (d / "broken.tif").write_bytes(b"II*\x00garbage")


def test_enhance_keeps_names_formats_bits_and_reports_corrupt(tmp_path, tiny_ckpt, capsys):
    from hqg.data.io import image_info
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
    from hqg.data.io import write_image, read_image
    from hqg.data.degrade import synth_vessels
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



def _hazy_eye(d, seed=3):
    "A whole field-of-view image with haze over the border too (grey), and its exact FOV."
    from hqg.data.io import write_image
    from hqg.data.degrade import synth_vessels, degrade
    img, _, fov = synth_vessels(64, seed=seed, return_fov=True)
    write_image(d / "eye.png", degrade(img, "fundus", seed=seed)[0])
    return fov[0].bool()


def test_enhance_fov_auto_and_the_model_default_make_a_hazy_border_black(tmp_path, tiny_ckpt):
    from hqg.data.io import read_image
    fov = _hazy_eye(tmp_path / "in")
    far = ~torch.nn.functional.max_pool2d(fov.float()[None, None], 5, 1, 2)[0, 0].bool()  # 2+ px outside
    run = lambda out, *extra, ck=tiny_ckpt: main(["enhance", "--checkpoint", str(ck), "--input", str(tmp_path / "in"),
                                                  "--output", str(tmp_path / out), "--device", "cpu", *extra])
    assert run("plain") == 0 and run("auto", "--fov", "auto") == 0
    plain, auto = read_image(tmp_path / "plain" / "eye.png"), read_image(tmp_path / "auto" / "eye.png")
    assert plain[:, far].mean() > 0.05                       # old default: the input's grey border is copied
    assert auto[:, far].max() == 0                           # --fov auto: black (exact: 8-bit 0)
    assert (auto[:, fov] - plain[:, fov]).abs().mean() < 0.02  # the inside is the same enhancement
    assert run("copied", "--fov", "auto", "--keep-fov", "on") == 0   # the old flag still copies when asked to
    assert read_image(tmp_path / "copied" / "eye.png")[:, far].mean() > 0.05
    assert main(["export", "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "auto.pt"), "--fov", "auto"]) == 0
    assert run("model", ck=tmp_path / "auto.pt") == 0         # the model's stored setting is the default
    assert read_image(tmp_path / "model" / "eye.png")[:, far].max() == 0   # exact: 8-bit 0, as above
    assert run("model-none", "--fov", "none", ck=tmp_path / "auto.pt") == 0
    assert read_image(tmp_path / "model-none" / "eye.png")[:, far].mean() > 0.05


def test_enhance_fov_mask_file_folder_and_size_mismatch(tmp_path, tiny_ckpt, capsys):
    from hqg.data.io import read_image, write_image
    fov = _hazy_eye(tmp_path / "in")
    write_image(tmp_path / "in" / "other.png", torch.rand(3, 40, 48))
    m = torch.zeros(1, 64, 64); m[:, 8:56, 4:60] = 1
    write_image(tmp_path / "masks" / "eye.png", m)                       # a folder: matched by stem
    write_image(tmp_path / "masks" / "other.tif", torch.ones(1, 40, 48), bits=16)
    run = lambda out, mask: main(["enhance", "--checkpoint", str(tiny_ckpt), "--input", str(tmp_path / "in"),
                                  "--output", str(tmp_path / out), "--device", "cpu", "--fov", str(mask)])
    assert run("a", tmp_path / "masks") == 0
    y = read_image(tmp_path / "a" / "eye.png")
    assert y[:, ~m[0].bool()].max() == 0 and y[:, m[0].bool()].mean() > 0.05   # exact: 8-bit 0 outside the mask
    assert run("n", "none") == 0                                         # an all-white mask: nothing masked
    torch.testing.assert_close(read_image(tmp_path / "a" / "other.png"), read_image(tmp_path / "n" / "other.png"),
                               rtol=0, atol=1 / 255)
    capsys.readouterr()
    assert run("b", tmp_path / "masks" / "eye.png") == 1                 # one file for all: other.png is 48x40
    cap = capsys.readouterr()
    line = [l for l in cap.err.splitlines() if "other.png" in l]
    assert len(line) == 1 and "masks/eye.png" in line[0] and "64x64" in line[0] and "48x40" in line[0], cap.err
    assert "enhanced 1 image(s)" in cap.out and (tmp_path / "b" / "eye.png").exists()
    (tmp_path / "masks" / "other.tif").unlink()
    assert run("c", tmp_path / "masks") == 1 and "no mask named other.*" in capsys.readouterr().err
    assert run("d", tmp_path / "nothing") == 2
    err = capsys.readouterr().err
    assert err.startswith("hqg: error: ") and "nothing: no such mask file or folder" in err and err.count("\n") == 1

@pytest.mark.parametrize("what", ["missing", "foreign", "same-folder", "no-input"])
def test_enhance_bad_input_is_one_line(tmp_path, tiny_ckpt, capsys, what):
    import torch
    from hqg.data.io import write_image
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
            assert torch.equal(v, sb["train_state"][net][k]), (net, k)   # exact: bitwise resume is the contract


def test_shipped_default_model_enhances_the_fundus_test_set(tmp_path, capsys):
    """The model in data_samples/models improves PSNR on the (held-out views of the) fundus test set, SSIM kept."""
    from hqg.app.cli import score_pairs
    t = ROOT / "data_samples/fundus/test"
    assert main(["enhance", "--input", str(t / "lq"), "--output", str(tmp_path), "--device", "cpu"]) == 0
    rows = score_pairs(t / "lq", tmp_path, t / "gt")
    mean = lambda k: sum(r[k] for r in rows) / len(rows)
    assert mean("psnr_enh") > mean("psnr_lq") + 3
    # SSIM: measured 0.7806 enhanced vs 0.7845 degraded with the guidance recipe (it was +0.008 before the relative
    # style term): the model keeps structure (SSIM within 0.01 of the input) but does not raise it (README, issue 13).
    assert mean("ssim_enh") > mean("ssim_lq") - 0.01
    prov = __import__("torch").load(ROOT / "data_samples/models/fundus_tiny.pt", weights_only=True)["provenance"]
    assert prov["step"] == 800 and prov["seed"] == 0 and "make default-model" in prov["command"]


def test_enhance_uncertainty_writes_a_map_beside_each_output(tmp_path, capsys):
    from hqg.data.io import read_image
    src = ROOT / "data_samples" / "fundus" / "test" / "lq"
    assert main(["enhance", "--input", str(src / "test_01_crop.png"), "--output", str(tmp_path), "--uncertainty", "4",
                 "--device", "cpu"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_01_crop.png", "test_01_crop_uncertainty.tif"]
    u = read_image(tmp_path / "test_01_crop_uncertainty.tif")
    assert u.shape == (1, 192, 192) and u.dtype == torch.float32 and 0 < float(u.mean()) < 0.1
    assert main(["enhance", "--input", str(src), "--output", str(tmp_path / "b"), "--uncertainty", "1"]) == 2
    assert "uncertainty: expected 0 (off) or a number of samples >= 2, got 1" in capsys.readouterr().err


def test_evaluate_and_benchmark_take_guides():
    from hqg.app.cli import build_parser
    a = build_parser().parse_args(["evaluate", "--method", "clahe", "--data", "x", "--out", "y", "--guides", "g"])
    b = build_parser().parse_args(["benchmark", "--methods", "identity", "--guides", "data_samples/fundus/guides"])
    assert (a.guides, b.guides) == ("g", "data_samples/fundus/guides")


JSON_BENCHES = [  # (subcommand + small settings, figure keys that must carry a unit)
    (["wavelets", "--batch", "1", "--image-size", "32", "--repeats", "1"], {"hqg_best_ms": "ms", "pywt_median_ms": "ms"}),
    (["generator", "--sizes", "tiny", "--batch", "1", "--image-size", "32", "--repeats", "1", "--device", "cpu"],
     {"forward_ms": "ms", "gmacs": "GMAC", "params": "count"}),
    (["training", "--sizes", "tiny", "--batch", "2", "--image-size", "32", "--repeats", "1"], {"s_per_step": "s", "images_per_s": "1/s"}),
    (["enhance", "--batch", "2", "--image-size", "32", "--repeats", "1", "--device", "cpu"], {"images_per_s": "1/s"}),
    (["explorer", "--repeats", "1"], {"uncached_s": "s", "cached_s": "s"}),
    (["compare", "--sizes", "tiny", "--image-size", "32", "--repeats", "1", "--device", "cpu"],
     {"train_step_ms": "ms", "gen_gmacs": "GMAC", "gen_params": "count", "train_step_peak_mb": "MiB"}),
]


@pytest.mark.parametrize("args,units", JSON_BENCHES, ids=lambda a: a[0] if isinstance(a, list) else "")
def test_bench_json_prints_one_object_with_units_and_machine(args, units, capsys):
    import json, torch
    assert main(["bench", *args, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out[:500]                       # one JSON object on one line, nothing else printed
    r = json.loads(out)
    assert r["bench"] == args[0] and set(r) == {"bench", "machine", "units", "results"}
    assert r["machine"]["torch"] == torch.__version__ and r["machine"]["cores"] >= 1 and r["machine"]["cpu"]
    for k, u in units.items(): assert r["units"][k] == u, (k, r["units"])
    rows = r["results"] if isinstance(r["results"], list) else [r["results"]]
    assert all(any(k in row for row in rows) for k in units)
    if args[0] == "compare": assert [row["name"] for row in rows] == ["hqg tiny", "released"]
