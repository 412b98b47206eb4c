"""The Colab first cell (clone, install, restart note, widget manager) and tutorials that run from any folder."""
import configparser, json, subprocess, sys, types
from pathlib import Path

import pytest

from hqg.app.runs import run_notebook

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "nbs" / "tutorials"


def _colab_cell(nb: Path) -> str:
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    found = ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and "HQG_REPO = " in "".join(c["source"])]
    assert len(found) == 1, f"{nb.name}: expected one Colab cell, found {len(found)}"
    return found[0]


def test_one_colab_cell_everywhere_with_the_project_url():
    cell = _colab_cell(TUTORIALS / "01_quickstart.ipynb")
    assert _colab_cell(TUTORIALS / "03_explore.ipynb") == cell
    assert cell in (ROOT / "README.md").read_text(encoding="utf-8"), "README's Colab cell differs from the tutorials'"
    ini = configparser.ConfigParser(); ini.read(ROOT / "settings.ini")
    assert f'HQG_REPO = "{ini["DEFAULT"]["git_url"]}"' in cell


def _run_cell(cell: str, monkeypatch, colab: bool, installed: bool = False):
    calls, widgets = [], []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(list(cmd)))
    monkeypatch.setattr("os.path.isdir", lambda p: installed if p == "/content/hqg" else False)
    if colab:
        output = types.SimpleNamespace(enable_custom_widget_manager=lambda: widgets.append(True))
        google = types.ModuleType("google"); gc = types.ModuleType("google.colab"); gc.output = output
        google.colab = gc
        monkeypatch.setitem(sys.modules, "google", google); monkeypatch.setitem(sys.modules, "google.colab", gc)
    else: monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(cell, "colab-cell", "exec"), {})
    return calls, widgets


def test_colab_cell_clones_installs_says_restart_and_enables_widgets(monkeypatch, capsys):
    cell = _colab_cell(TUTORIALS / "01_quickstart.ipynb")
    calls, widgets = _run_cell(cell, monkeypatch, colab=True)
    url = cell.split('HQG_REPO = "')[1].split('"')[0]
    assert calls == [["git", "clone", "--depth", "1", url, "/content/hqg"],
                     [sys.executable, "-m", "pip", "install", "-q", "-e", "/content/hqg"]]
    assert widgets == [True] and "Restart session" in capsys.readouterr().out
    calls, widgets = _run_cell(cell, monkeypatch, colab=True, installed=True)   # after the restart: no reinstall
    assert calls == [] and widgets == [True] and capsys.readouterr().out == ""
    calls, widgets = _run_cell(cell, monkeypatch, colab=False)                   # JupyterLab, papermill: nothing
    assert calls == [] and widgets == []


def test_quickstart_runs_from_the_repository_root(tmp_path):
    "nbdev_test runs the tutorials from nbs/tutorials/; here the kernel starts in the repository root."
    done = run_notebook(TUTORIALS / "01_quickstart.ipynb", {}, tmp_path, cwd=ROOT)
    cells = json.loads(done.read_text(encoding="utf-8"))["cells"]
    assert not any(o.get("output_type") == "error" for c in cells for o in c.get("outputs", []))
    code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert 'Path("..")' not in code  # data found through hqg.core.repo_file, not the working folder
