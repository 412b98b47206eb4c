"""The README's snippets run as written: the Python examples, the Colab cell (with a stand-in google.colab), and
every `hqg` sub-command it names exists."""
import os, re, shlex, sys, types
from pathlib import Path

import pytest

from hqg.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_python_examples_run_from_the_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    code = [b for b in blocks("python") if "google.colab" not in b]
    assert len(code) >= 2
    ns = {}
    for b in code: exec(compile(b, "README.md", "exec"), ns)
    assert ns["y"].shape == ns["x"][None].shape  # the blended-guidance example produced an image


def test_colab_cell_runs_with_a_stand_in_colab_module(tmp_path, monkeypatch):
    cell = re.search(r"```python\n(.*?)```", section("Open in Colab"), flags=re.S).group(1)
    shell = [l[1:] for l in cell.splitlines() if l.startswith("!")]
    assert shell and "pip install" in shell[0] and "enable_custom_widget_manager" in cell
    extras = re.findall(r'"hqg\[(\w+)\]"', shell[0])
    setup = (ROOT / "settings.ini").read_text() + (ROOT / "setup.py").read_text()
    assert all(e in setup for e in extras), extras  # the extras it installs exist
    calls = []
    colab = types.ModuleType("google.colab"); colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(1))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    (tmp_path / "hqg").symlink_to(ROOT)  # what the clone would have made
    monkeypatch.chdir(tmp_path)
    exec(compile("\n".join(l for l in cell.splitlines() if not l.startswith("!")), "README.md", "exec"), {})
    assert calls == [1] and Path.cwd().resolve() == ROOT.resolve() and Path("nbs/tutorials/01_quickstart.ipynb").is_file()


def test_every_hqg_command_in_the_readme_parses():
    cmds = [l.split("#")[0].strip() for b in blocks("bash") for l in b.splitlines()]
    cmds = [c[c.index("hqg "):] if not c.startswith("hqg ") and " -m hqg.cli " not in c else c for c in cmds if "hqg " in c]
    parser = build_parser()
    seen = set()
    for c in cmds:
        argv = shlex.split(c.split(" -m hqg.cli ", 1)[1] if " -m hqg.cli " in c else c)[1 if c.startswith("hqg ") else 0:]
        if argv and argv[0] in ("install", "-q"): continue
        args = parser.parse_args(argv)  # SystemExit on an unknown command or option
        seen.add(args.command)
    assert {"enhance", "train", "run", "sweep"} <= seen


def _table_rows(text: str, title: str) -> list[str]:
    sec = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [l.strip() for l in sec.splitlines() if l.strip().startswith("|")]


def test_index_notebook_mirrors_the_readme_tables():
    import nbformat
    nb = nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for title in ("Notebook map", "Paper ↔ code"):
        for row in _table_rows(README, title)[2:]:
            assert row in md, f"index.ipynb lacks the README's {title} row {row[:60]!r}"
    for cmd in ("make demo", "make test", "hqg enhance", "hqg train", "hqg evaluate", "hqg benchmark"):
        assert cmd in md, cmd


def test_every_notebook_is_on_the_notebook_map():
    rows = "\n".join(_table_rows(README, "Notebook map"))
    for nb in sorted((ROOT / "nbs").glob("[0-9]*.ipynb")) + sorted((ROOT / "nbs" / "experiments").glob("*.ipynb")):
        name = nb.stem if nb.parent.name == "nbs" else f"experiments/{nb.stem}"
        assert f"`{name}`" in rows, f"README notebook map lacks {name}"
    assert "`tutorials/01`–`04`" in rows and len(list((ROOT / "nbs" / "tutorials").glob("*.ipynb"))) == 4
