"""Every `hqg run nbs/experiments/...` command the documentation shows trains what its preset says.

The experiment notebooks' `parameters` cells hold a real run (`None` = the preset's value); their smoke settings
apply only under `nbdev_test` or `-p smoke True`. These tests read each documented command line from README.md,
CONTRIBUTING.md and the notebooks, resolve it as `hqg run` would, and compare with the preset; one command is
run as written through papermill with a one-step cap.
"""
import ast, json, os, re, shlex
from pathlib import Path

import pytest

from hqg.app.cli import build_parser, _notebook_params
from hqg.app.runs import (config_to_dict, load_config, notebook_config, notebook_parameters, notebook_settings,
                      read_metrics)

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "nbs").rglob("*.ipynb"))]
MY_DATA = ROOT / "data_samples" / "fundus"  # stands in for the user's "$PWD/my_data"


def _text(path: Path) -> str:
    if path.suffix != ".ipynb": return path.read_text(encoding="utf-8")
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"])


def documented_runs() -> list[tuple[str, str]]:
    "(file, command) for every `hqg run nbs/experiments/...` line (backslash continuations joined, comments cut)."
    found = []
    for path in DOCS:
        text = _text(path).replace("\\\n", " ")
        for m in re.finditer(r"hqg run (nbs/experiments/[^`\n#]*)", text):
            found.append((path.relative_to(ROOT).as_posix(), "hqg run " + m.group(1).strip().rstrip(")").strip()))
    return found


def _resolve(cmd: str) -> tuple[Path, dict]:
    "The notebook and its parameters (declared defaults, then the command's -p values) as `hqg run` passes them."
    argv = shlex.split(cmd.replace("$PWD/my_data", str(MY_DATA)))[1:]
    a = build_parser().parse_args(argv)
    nb = ROOT / a.notebook
    declared = {k: ast.literal_eval(v) for k, v in notebook_parameters(nb).items()}
    given = _notebook_params(a)
    assert set(given) <= set(declared), f"{cmd}: parameters {set(given) - set(declared)} are not declared in {nb.name}"
    return nb, {**declared, **given}


RUNS = documented_runs()


def test_the_docs_show_runs_of_every_experiment_notebook():
    shown = {Path(shlex.split(c)[2]).name for _, c in RUNS}
    assert shown >= {"20_train_hqg.ipynb", "21_train_bilevel.ipynb", "22_benchmark.ipynb"}, shown
    assert any("-p device cuda" in c and "preset paper" in c for _, c in RUNS), "no documented GPU run"


@pytest.mark.parametrize("src, cmd", RUNS, ids=[f"{s}:{i}" for i, (s, _) in enumerate(RUNS)])
def test_documented_run_resolves_to_its_preset(src, cmd, monkeypatch):
    monkeypatch.delenv("IN_TEST", raising=False)  # a user's shell: no nbdev_test
    nb, p = _resolve(cmd)
    assert p.get("smoke") is None, f"{src}: {cmd} asks for a smoke run"
    data = p.get("data_root") or p.get("root")
    if data is not None and "my_data" not in cmd:
        assert (nb.parent / data).is_dir(), f"{src}: {cmd}: data folder {data} (relative to {nb.parent}) missing"
    if nb.name != "20_train_hqg.ipynb":  # the bi-level and benchmark notebooks: no smoke value may leak in
        keys = [k for k in p if k not in ("smoke", "run_dir", "out")]
        assert notebook_settings({k: p[k] for k in keys}, p.get("smoke"), verbose=False) == {k: p[k] for k in keys}
        if nb.name == "22_benchmark.ipynb": assert p["methods"] is None and p["seeds"] == 3  # every method, 3 seeds
        return
    s = notebook_settings({k: p[k] for k in ("max_steps", "image_size", "batch_size", "overrides")}, p["smoke"],
                          {"max_steps": 3, "image_size": 32}, verbose=False)
    cfg = notebook_config(p["preset"], p["data_root"], p["seed"], p["device"], s["image_size"], s["batch_size"],
                          s["overrides"])
    want = load_config(p["preset"], {"data.root": str(p["data_root"]), "train.device": p["device"],
                                     "train.seed": p["seed"], **(p["overrides"] or {})})
    assert config_to_dict(cfg) == config_to_dict(want), f"{src}: {cmd} does not train the preset {p['preset']}"
    assert s["max_steps"] is None or s["max_steps"] >= 100, f"{src}: {cmd}: a {s['max_steps']}-step run"


def test_first_documented_tiny_run_trains_the_preset_as_written(tmp_path, monkeypatch):
    "The README's first training command through papermill, as written plus a one-step cap and --out."
    monkeypatch.delenv("IN_TEST", raising=False); monkeypatch.chdir(ROOT)
    cmd = next(c for _, c in RUNS if "20_train_hqg" in c and "paper" not in c and "my_data" not in c)
    nb, p = _resolve(cmd)
    argv = shlex.split(cmd)[1:] + ["-p", "max_steps", "1", "-p", "device", "cpu", "--out", str(tmp_path)]
    assert build_parser().parse_args(argv).func(build_parser().parse_args(argv)) in (None, 0)
    run = next(tmp_path.iterdir())
    cfg = load_config(run / "config.yaml")
    want = load_config(p["preset"], {"train.seed": p["seed"], **(p["overrides"] or {})})
    got, exp = config_to_dict(cfg), config_to_dict(want)
    for k in ("root",): got["data"].pop(k); exp["data"].pop(k)
    for k in ("device", "max_steps"): got["train"].pop(k); exp["train"].pop(k)
    assert got == exp, cmd
    assert cfg.train.max_steps == 1 and read_metrics(run)[-1]["step"] == 1
    assert cfg.data.size == want.data.size and cfg.train.pretrain_guidance_steps == want.train.pretrain_guidance_steps


@pytest.mark.parametrize("name", ["20_train_hqg", "21_train_bilevel", "22_benchmark"])
def test_notebook_out_default_is_where_hqg_run_puts_runs(name):
    "Run in Jupyter or through `hqg run` (default --out runs/<notebook>): the runs land in the same folder."
    nb = ROOT / "nbs" / "experiments" / f"{name}.ipynb"
    out = ast.literal_eval(notebook_parameters(nb)["out"])
    assert (nb.parent / out).resolve() == (ROOT / "runs" / name).resolve(), out


@pytest.mark.parametrize("name", ["20_train_hqg", "21_train_bilevel", "22_benchmark"])
def test_papermill_sees_every_parameter(name):
    "papermill's inspector drops a parameter whose comment has a quote in it; then `-p` of it is refused."
    nb = ROOT / "nbs" / "experiments" / f"{name}.ipynb"
    cell = next(c for c in json.loads(nb.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    assigned = re.findall(r"^(\w+) = ", "".join(cell["source"]), flags=re.M)
    assert list(notebook_parameters(nb)) == assigned
