"""hqg.app.runs: typed configs + YAML, presets/overlays, run folders, build/train/resume, papermill runs and sweeps."""
import csv, json, os, re, socket, subprocess, sys
from pathlib import Path

import nbformat
import pytest
import torch
import torch.multiprocessing as mp

from hqg.model.networks import HQGNet
from hqg.app.runs import (DataConfig, LossConfig, ModelConfig, NotebookError, RunConfig, TrainConfig, build,
                      config_to_dict, load_config, new_run_dir, notebook_parameters, parse_overrides, read_metrics,
                      run_notebook, save_config, sweep, train)

ROOT = Path(__file__).resolve().parents[1]
FUNDUS = ROOT / "data_samples" / "fundus"
TRAIN_NB = ROOT / "nbs" / "experiments" / "20_train_hqg.ipynb"
SMOKE = {"data.root": str(FUNDUS), "data.size": 32, "data.batch_size": 2, "train.device": "cpu",
         "train.pretrain_guidance_steps": 0, "train.val_every": None, "train.sample_every": 2, "train.log_every": 1}


@pytest.fixture(autouse=True)
def _one_thread_kernels(monkeypatch):
    "papermill kernels inherit the environment: one OpenMP thread, like the pytest process (2 shared cores)."
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# ---------------------------------------------------------------- configs and YAML

def test_yaml_round_trip_is_exact(tmp_path):
    cfg = load_config("tiny+no-feature", {"data.root": "some/where", "model.overrides.gen_base": 8,
                                          "loss.level_weights": [1, 0.5, 0.25], "train.lr_decay_start": 100})
    p = save_config(cfg, tmp_path / "config.yaml")
    text = p.read_text()
    assert "val_root: null" in text and "None" not in text and not re.search(r"^base:", text, re.M)
    assert "level_weights: [1.0, 0.5, 0.25]" in text
    back = load_config(p)
    assert back == cfg                                 # exact: config values we wrote, read back (no arithmetic)
    assert back.loss.level_weights == (1.0, 0.5, 0.25) and back.model.overrides["gen_base"] == 8
    assert config_to_dict(back)["train"]["betas"] == [0.5, 0.999]


def test_unknown_keys_name_key_section_and_valid_keys(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key 'trian' at the top level; valid keys: base, name, data, model, loss, train"):
        load_config({"trian": {"max_steps": 3}})
    f = tmp_path / "exp.yaml"
    f.write_text("base: tiny\nloss:\n  lambda_wavlet: 0\n")
    with pytest.raises(ValueError) as e:
        load_config(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: unknown key 'lambda_wavlet' in section 'loss'; valid keys: lambda_adv, lambda_wavelet")
    assert "illum_patch_sizes" in msg and "\n" not in msg
    with pytest.raises(ValueError, match=r"unknown key 'gen_bse' in section 'model.overrides'; valid keys: gen_base"):
        load_config("tiny", {"model.overrides.gen_bse": 8})
    with pytest.raises(ValueError, match=r"overrides: unknown key 'max_step' in section 'train'; valid keys: max_steps"):
        load_config("tiny", {"train.max_step": 8})
    with pytest.raises(ValueError, match=r"unknown section 'trian' in 'trian.max_steps'"):
        load_config("tiny", {"trian.max_steps": 8})


def test_bad_types_and_values_name_the_dotted_key(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("data:\n  size: '64'\n")
    with pytest.raises(ValueError, match=r"t.yaml: data.size: expected an int, got '64' \(str\)"):
        load_config(f)
    with pytest.raises(ValueError, match=r"train.amp: expected true or false, got 1 \(int\)"):
        load_config("tiny", {"train.amp": 1})
    with pytest.raises(ValueError, match=r"train.betas: expected a list of 2 numbers"):
        load_config("tiny", {"train.betas": [0.5]})
    with pytest.raises(ValueError, match=r"model.variant: expected one of \['hqg', 'deterministic', 'official'"):
        load_config("tiny", {"model.variant": "vnm"})
    with pytest.raises(ValueError, match=r"loss.lambda_kl: expected values >= 0.0"):
        LossConfig(lambda_kl=-0.1)
    with pytest.raises(ValueError, match=r"data.size: expected an int, got True"):
        DataConfig(size=True)
    # YAML 1.1 reads 1e-4 as a string: accepted for number fields
    f.write_text("base: tiny\ntrain:\n  lr_g: 1e-4\n")
    assert load_config(f).train.lr_g == 1e-4          # exact: a parsed literal, no arithmetic


def test_presets_and_overlays_compose():
    tiny, nw = load_config("tiny"), load_config("tiny+no-wavelet")
    assert (nw.loss.lambda_wavelet, nw.data.size, nw.model.size) == (0.0, tiny.data.size, "tiny")
    assert nw.loss.lambda_feat == tiny.loss.lambda_feat == 1.0 and nw.name == "tiny+no-wavelet"
    nv = load_config("tiny+no-vnm+no-feature")
    assert (nv.model.variant, nv.loss.lambda_kl, nv.loss.lambda_feat, nv.loss.lambda_wavelet) == ("deterministic", 0.0, 0.0, 10.0)
    off = load_config("hqg-official")
    assert (off.model.variant, off.model.size, off.data.size, off.data.batch_size) == ("official", "paper", 384, 1)
    assert (off.loss.lambda_struct, off.loss.lambda_illum, off.loss.illum_patch_sizes) == (0.25, 0.05, (48, 96))
    paper = load_config("paper")
    assert (paper.data.size, paper.model.size, paper.train.amp) == (384, "paper", True)
    assert 64 <= tiny.data.size <= 128 and tiny.model.size == "tiny"
    with pytest.raises(ValueError, match="unknown config 'no-vnn': expected a preset"):
        load_config("tiny+no-vnn")


def test_overrides_and_cli_parsing():
    cfg = load_config("tiny", parse_overrides(["train.max_steps=10", "data.root=data_samples/fundus",
                                               "train.val_every=null", "loss.illum_patch_sizes=[4, 8]", "name=x"]))
    assert (cfg.train.max_steps, cfg.data.root, cfg.train.val_every, cfg.loss.illum_patch_sizes, cfg.name) == \
        (10, "data_samples/fundus", None, (4, 8), "x")
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_overrides(["train.max_steps"])


def test_user_file_with_base_and_example_config(tmp_path):
    (tmp_path / "base.yaml").write_text("base: tiny+no-wavelet\nname: fundus\ndata:\n  root: here\n  size: 48\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\ntrain:\n  max_steps: 7\n")
    cfg = load_config(tmp_path / "exp.yaml", {"data.batch_size": 3})
    assert (cfg.name, cfg.data.root, cfg.data.size, cfg.data.batch_size, cfg.loss.lambda_wavelet, cfg.train.max_steps) == \
        ("exp", "here", 48, 3, 0.0, 7)
    ex = ROOT / "experiments" / "configs"
    files = sorted(ex.glob("*.yaml"))
    assert files, "experiments/configs/ should hold at least one example config"
    for f in files:
        c = load_config(f)
        assert isinstance(c, RunConfig) and c.data.root is not None


def test_new_run_dir_is_unique_and_named(tmp_path):
    runs = [new_run_dir(tmp_path / "out") for _ in range(4)]
    assert len(set(runs)) == 4 and all(r.is_dir() for r in runs)
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-z]+(-\d+)?", r.name) for r in runs)


def test_build_shapes_and_variants():
    net, loss, ds, val = build(load_config("tiny", SMOKE))
    item = ds[0]
    assert item["lq"].shape == item["hq"].shape == (3, 32, 32)
    assert (len(ds), len(val)) == (8, 4)
    with torch.no_grad():
        out = net(item["lq"][None], net.encode_guidance(item["hq"][None]))
    assert out.x_enh.shape == (1, 3, 32, 32) and 0 <= out.x_enh.min() and out.x_enh.max() <= 1
    gray = build(load_config("tiny+no-vnm", {**SMOKE, "data.channels": 1, "data.val": False}))
    assert gray[0].in_channels == 1 and gray[2][0]["lq"].shape == (1, 32, 32) and gray[3] is None
    assert gray[0].cfg["gen_conditioning"] == "deterministic" and gray[1].weights["kl"] == 0.0  # exact: a configured weight


def test_build_data_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^data.root: .*nope does not exist or is not a folder$"):
        build(load_config("tiny", {"data.root": str(tmp_path / "nope")}))
    with pytest.raises(ValueError, match=r"^data.root: .* is empty; expected image folders lq/ and hq/"):
        build(load_config("tiny", {"data.root": str(tmp_path)}))
    (tmp_path / "lq").mkdir(); (tmp_path / "hq").mkdir()
    with pytest.raises(ValueError) as e:
        build(load_config("tiny", {"data.root": str(tmp_path)}))
    assert "expected at least one LQ image" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="data.root: not set"):
        build(load_config("tiny"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(load_config("tiny", {"data.root": str(tmp_path / "nope")}), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # no run folder for a run that could not start


# ---------------------------------------------------------------- training runs

def test_train_then_resume_in_the_same_folder(tmp_path):
    out = tmp_path / "runs"
    with pytest.raises(FileNotFoundError, match=r"resume: no run under .* has checkpoints/last.pt"):
        train(load_config("tiny", SMOKE), out, resume=True, progress=False)
    run = train(load_config("tiny", SMOKE), out, max_steps=2, progress=False)
    assert run.parent == out
    assert load_config(run / "config.yaml").train.max_steps == 2
    assert (run / "checkpoints" / "last.pt").is_file()
    rows = read_metrics(run)
    assert rows[-1]["step"] == 2 and (run / "metrics.csv").is_file()
    assert any((run / "samples").glob("step_*.png"))
    from hqg.train.loop import load_checkpoint
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["step"] == 2 and ck["config"]["data"]["size"] == 32
    run2 = train(None, out, max_steps=4, resume=True, progress=False)
    assert run2 == run and [p.name for p in out.iterdir()] == [run.name]
    assert read_metrics(run)[-1]["step"] == 4
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert load_config(run / "config.yaml").train.max_steps == 4
    moved = str(FUNDUS.parent / "." / "fundus")  # a data path may change on resume (moved data)
    with pytest.warns(UserWarning, match=r"ignoring the given data.size \(32 -> 48\)"):
        train(load_config("tiny", {**SMOKE, "data.size": 48, "data.root": moved}), out, max_steps=5, resume=True,
              progress=False)
    cfg5 = load_config(run / "config.yaml")
    assert (cfg5.train.max_steps, cfg5.data.size, cfg5.data.root) == (5, 32, moved)


# ---------------------------------------------------------------- papermill

def _toy(path, body="if fail: raise RuntimeError(f'boom {a}')\nimport sys; print(sys.executable)"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("a = 1\nfail = False", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))
    return path


def test_progress_bar_follows_the_run_folder_given_relative(tmp_path, monkeypatch, capfd):
    "papermill chdirs into the notebook's folder while it runs: the bar must still find a relative run folder."
    body = ("import json, time, pathlib\nd = pathlib.Path(run_dir) / 'sub' / 'r1'; d.mkdir(parents=True)\n"
            "(d / 'config.yaml').write_text('train: {max_steps: 20}\\n')\n"
            "for s in (10, 20):\n"
            "    with open(d / 'metrics.jsonl', 'a') as f: f.write(json.dumps({'step': s, 'g_total': 1.5, 'd_total': 0.5}) + '\\n')\n"
            "    time.sleep(1.5)")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("run_dir = None", metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(body)]
    (tmp_path / "nb").mkdir(); nbformat.write(nb, str(tmp_path / "nb" / "p.ipynb"))
    monkeypatch.chdir(tmp_path)
    run_notebook(Path("nb") / "p.ipynb", None, Path("runs"), progress=True)
    err = capfd.readouterr().err
    assert "train sub/r1" in err and "20/20" in err and "g=1.500" in err, err[-500:]
    assert "Kernel is running over TCP" not in err  # the kernel's start-up warning is silenced


def test_python3_kernel_is_this_interpreter(tmp_path):
    done = run_notebook(_toy(tmp_path / "k.ipynb"), {"a": 2}, tmp_path / "runs")
    out = nbformat.read(str(done), as_version=4).cells[-1].outputs[0].text.strip()
    assert Path(out).resolve() == Path(sys.executable).resolve()


def test_failing_notebook_raises_and_keeps_the_error(tmp_path):
    with pytest.raises(NotebookError) as e:
        run_notebook(_toy(tmp_path / "f.ipynb"), {"a": 7, "fail": True}, tmp_path / "runs")
    err = e.value
    assert (err.ename, err.evalue, err.exec_count) == ("RuntimeError", "boom 7", 3)
    assert "f.ipynb failed in cell 3 with RuntimeError: boom 7" in str(err)
    nb = nbformat.read(str(err.output), as_version=4)
    assert nb.metadata.papermill.exception is True
    assert nb.cells[-1].outputs[-1].ename == "RuntimeError" and nb.cells[-1].metadata.papermill.status == "failed"
    assert err.output.parent == err.run_dir and err.run_dir.parent == tmp_path / "runs"


def test_train_notebook_parameters_and_tag_survive_nbdev_clean(tmp_path):
    params = notebook_parameters(TRAIN_NB)
    for k in ("preset", "data_root", "out", "run_dir", "max_steps", "device", "seed", "resume"):
        assert k in params
    # the defaults are a real run (None = the preset's); the smoke settings only under nbdev_test or smoke=True
    assert (params["run_dir"], params["max_steps"], params["image_size"], params["smoke"]) == ("None",) * 4
    assert params["overrides"] == "{}"
    cells = json.loads(TRAIN_NB.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown"
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged == [1]
    dirty = json.loads(TRAIN_NB.read_text())
    dirty["cells"][1]["metadata"]["collapsed"] = True
    dirty["cells"][1]["execution_count"] = 5
    copy = tmp_path / "20_train_hqg.ipynb"
    copy.write_text(json.dumps(dirty))
    nbdev_clean = Path(sys.executable).parent / "nbdev_clean"
    subprocess.run([str(nbdev_clean), "--fname", str(copy)], cwd=ROOT, check=True, capture_output=True)
    cleaned = json.loads(copy.read_text())["cells"][1]
    assert cleaned["metadata"] == {"tags": ["parameters"]} and cleaned["execution_count"] is None


def test_train_notebook_runs_through_papermill(tmp_path):
    out = tmp_path / "runs"
    small = {"image_size": 32, "batch_size": 2, "overrides": {"train.pretrain_guidance_steps": 2}}
    done = run_notebook(TRAIN_NB, {"max_steps": 2, "device": "cpu", "seed": 1, **small}, out)
    run = done.parent
    assert done.name == TRAIN_NB.name and run.parent == out
    nb = nbformat.read(str(done), as_version=4)
    inj = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(inj) == 1 and "max_steps = 2" in inj[0].source and f"run_dir = \"{run.resolve()}\"" in inj[0].source
    assert nb.metadata.papermill.parameters["seed"] == 1
    cfg = load_config(run / "config.yaml")
    assert (cfg.train.max_steps, cfg.train.seed, cfg.data.size, cfg.data.batch_size) == (2, 1, 32, 2)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert cfg.train.pretrain_guidance_steps == 2 and "smoke run (smoke=" not in printed  # a real run, as asked
    assert (run / "checkpoints" / "last.pt").is_file() and read_metrics(run)[-1]["step"] == 2
    assert any((run / "samples").glob("step_*.png")) and "val_psnr" in read_metrics(run)[-1]
    # resume=True continues that run folder; the second executed notebook gets its own name there
    again = run_notebook(TRAIN_NB, {"max_steps": 3, "resume": True, "device": "cpu", **small}, out)
    assert (again.parent, again.name) == (run, "20_train_hqg-1.ipynb")
    assert read_metrics(run)[-1]["step"] == 3 and [p.name for p in out.iterdir()] == [run.name]
    # a bad parameter fails in the config cell; the executed notebook keeps the error
    with pytest.raises(NotebookError) as e:
        run_notebook(TRAIN_NB, {"preset": "tiny+no-such-overlay"}, out)
    assert e.value.ename == "ValueError" and "unknown config 'no-such-overlay'" in e.value.evalue
    assert e.value.output.is_file() and e.value.output.parent != run
    with pytest.raises(ValueError, match="not declared in the 'parameters' cell"):
        run_notebook(TRAIN_NB, {"max_stepz": 2}, out)


def test_sweep_records_good_and_failed_runs(tmp_path):
    nb = _toy(tmp_path / "toy.ipynb", body="if fail: raise ValueError(f'bad {a}')\nprint(a)")
    spec = tmp_path / "grid.yaml"
    spec.write_text("notebook: toy.ipynb\nparameters: {fail: false}\nruns:\n  - {a: 1}\n  - {a: 2, fail: true}\n")
    rows = sweep(spec, tmp_path / "sweep", verbose=False)
    assert [(r["a"], r["status"]) for r in rows] == [(1, "ok"), (2, "failed")]
    assert rows[1]["error"] == "ValueError: bad 2" and Path(rows[1]["run_dir"]).is_dir()
    with open(tmp_path / "sweep" / "sweep_summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [(t["run"], t["status"], t["a"]) for t in table] == [("0", "ok", "1"), ("1", "failed", "2")]
    md = (tmp_path / "sweep" / "sweep_summary.md").read_text().splitlines()
    assert len(md) == 4 and "failed" in md[3] and "ValueError: bad 2" in md[3]
    runs = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]
    assert len(runs) == 2 and all((p / "toy.ipynb").is_file() for p in runs)
    # a second sweep into the same folder keeps the first summary
    sweep({"notebook": str(nb), "grid": {"a": [3]}}, tmp_path / "sweep", verbose=False)
    assert (tmp_path / "sweep" / "sweep_summary-1.csv").is_file()


def test_resume_through_train_is_bitwise_exact(tmp_path):
    from hqg.train.loop import load_checkpoint
    cfg = load_config("tiny", {**SMOKE, "train.pretrain_guidance_steps": 2, "data.val": False})
    straight = train(cfg, tmp_path / "a", max_steps=4, progress=False)
    train(cfg, tmp_path / "b", max_steps=2, progress=False)
    resumed = train(cfg, tmp_path / "b", max_steps=4, resume=True, progress=False)
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4 and a["model"].keys() == b["model"].keys()
    # exact: bitwise resume in one process on one machine is the contract (weights and the logged loss)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    da, db = a["train_state"]["disc"], b["train_state"]["disc"]
    assert da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)
    ra, rb = read_metrics(straight), read_metrics(resumed)
    assert [r["step"] for r in rb] == [r["step"] for r in ra] and ra[-1]["g_total"] == rb[-1]["g_total"]


def _ddp_train_worker(rank, world, out, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    run = train(load_config("tiny", {**SMOKE, "data.val": False}), out, max_steps=2, progress=False)
    Path(out, f"rank{rank}.txt").write_text(str(run))


@pytest.mark.slow
def test_train_under_torchrun_env_shares_one_run_folder(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    out = tmp_path / "out"
    mp.spawn(_ddp_train_worker, args=(2, str(out), port), nprocs=2, join=True)
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1
    assert {(out / f"rank{r}.txt").read_text() for r in (0, 1)} == {str(runs[0])}
    assert (runs[0] / "config.yaml").is_file() and (runs[0] / "checkpoints" / "last.pt").is_file()
    assert read_metrics(runs[0])[-1]["step"] == 2


def test_validation_uses_the_fov_masked_metrics_the_demo_reports(tmp_path):
    from hqg.app.cli import score_pairs
    cfg = load_config("tiny", dict(SMOKE, **{"train.val_every": 1, "train.log_every": 1}))
    run = train(cfg, tmp_path, max_steps=1, progress=False)
    last = read_metrics(run)[-1]
    t = FUNDUS / "val"                                  # validation runs on root/val (settings are chosen there)
    rows = score_pairs(t / "lq", t / "lq", t / "gt")   # the LQ inputs scored as in `hqg demo`
    assert abs(last["val_psnr_lq"] - sum(r["psnr_lq"] for r in rows) / len(rows)) < 1e-3
    assert abs(last["val_ssim_lq"] - sum(r["ssim_lq"] for r in rows) / len(rows)) < 1e-4


def test_scheme_sections_round_trip_and_old_configs_still_load(tmp_path):
    cfg = load_config("tiny-bilevel", {"bilevel.solver": "unrolled", "bilevel.seg_steps": 2, "data.root": "x"})
    p = save_config(cfg, tmp_path / "c.yaml")
    back = load_config(str(p))
    assert (back.bilevel.solver, back.bilevel.seg_steps, back.bilevel.enabled, back.model.with_seg) == ("unrolled", 2, True, True)
    assert back.bilevel == cfg.bilevel and back.cycle == cfg.cycle   # exact: config values read back from YAML
    old = config_to_dict(load_config("tiny"))
    del old["cycle"], old["bilevel"]  # a config stored by an earlier hqg (e.g. the shipped model's)
    assert load_config(old).bilevel.enabled is False and load_config(old).model.method == "hqg"


def test_scheme_errors_name_the_key():
    with pytest.raises(ValueError, match=r"bilevel.solver: expected one of \['alternating', 'unrolled'\]"):
        load_config("tiny-bilevel", {"bilevel.solver": "implicit"})
    with pytest.raises(ValueError, match="model.method: expected one of"):
        load_config("tiny", {"model.method": "pix2pix"})
    with pytest.raises(ValueError, match="unknown key 'lambda_cycl' in section 'cycle'"):
        load_config("tiny+cyclegan", {"cycle.lambda_cycl": 1})


def test_trainer_class_of_plain_hqg_is_the_gan_trainer():
    from hqg.app.runs import trainer_class
    from hqg.train.hqg import Trainer
    assert trainer_class(load_config("tiny")) == (Trainer, {})


@pytest.mark.parametrize("spec,data", [("tiny", FUNDUS), ("tiny+no-vnm", FUNDUS), ("tiny+cyclegan", FUNDUS),
                                       ("tiny-bilevel", FUNDUS.parent / "vessels")])
def test_from_preset_is_the_network_a_preset_trains(spec, data):
    "One config source: HQGNet.from_preset(spec) has the architecture hqg train --config spec builds (not HQGNet(3, 'tiny'))."
    built = build(load_config(spec, {"data.root": str(data)}))[0]
    net = HQGNet.from_preset(spec)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes(net) == shapes(built)
    diff = {k for k in set(net.model_config) | set(built.model_config) if net.model_config.get(k) != built.model_config.get(k)}
    assert diff <= {"train_side"}, diff                    # the training images' side is known only with the data
    if spec == "tiny": assert shapes(HQGNet(3, "tiny")) != shapes(net)   # the bare architecture is wider (caps 128 vs 64)


def test_diverged_guidance_pretraining_stops_the_run_with_the_setting_to_change(tmp_path, monkeypatch):
    "Codes far beyond their healthy scale (the paper encoder at lr 1e-3 reached a std of ~3000) saturate every output:"
    "the run stops before the GAN starts and names train.pretrain_guidance_lr. The paper preset pre-trains at 2e-4."
    import hqg.app.runs as R
    assert load_config("paper").train.pretrain_guidance_lr == pytest.approx(2e-4)
    assert load_config("tiny").train.pretrain_guidance_lr == pytest.approx(1e-3)
    monkeypatch.setattr(R, "CODE_STD_LIMIT", 1e-6)
    cfg = load_config("tiny", {**SMOKE, "train.pretrain_guidance_steps": 1, "data.val": False})
    with pytest.raises(RuntimeError, match=r"pre-training diverged \(code std .* lower train.pretrain_guidance_lr"):
        train(cfg, tmp_path / "r", max_steps=1, progress=False)
    assert not list((tmp_path / "r").rglob("last.pt"))
