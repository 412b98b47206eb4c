"""The README's snippets run as written: the Python examples, the Colab cell (with a stand-in google.colab), and
every `hqg` sub-command it names exists."""
import os, re, shlex, sys, types
from pathlib import Path

import pytest

from hqg.app.cli import build_parser

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


def test_every_hqg_command_in_the_readme_parses():
    cmds = [l.split("#")[0].strip() for b in blocks("bash") for l in b.splitlines()
            if not l.startswith(("git ", "make ", "source ", "cd "))]
    cmds = [c[c.index("hqg "):] if not c.startswith("hqg ") and " -m hqg.app.cli " not in c else c for c in cmds if "hqg " in c]
    parser = build_parser()
    seen = set()
    for c in cmds:
        argv = shlex.split(c.split(" -m hqg.app.cli ", 1)[1] if " -m hqg.app.cli " in c else c)[1 if c.startswith("hqg ") else 0:]
        if argv and argv[0] in ("install", "-q"): continue
        args = parser.parse_args(argv)  # SystemExit on an unknown command or option
        seen.add(args.command)
    assert {"enhance", "train", "run", "sweep", "evaluate", "benchmark"} <= seen


def test_newcomer_path_from_clone_to_enhanced_folder_is_at_most_five_commands():
    "Install, then Quick start, in README order: the commands up to the first `hqg enhance` of one's own folder."
    install = re.search(r"```bash\n(.*?)```", README.split("## Install\n", 1)[1], flags=re.S).group(1)
    quick = re.search(r"```bash\n(.*?)```", README.split("## Quick start\n", 1)[1], flags=re.S).group(1)
    cmds = [c.strip() for l in (install + quick).splitlines() for c in l.split("#")[0].split("&&") if c.strip()]
    assert cmds[0].startswith("git clone") and cmds[-1].startswith("hqg enhance --input my_images/")
    assert "make install" in cmds and any(c.startswith("source .venv/bin/activate") for c in cmds)
    assert len(cmds) <= 5, cmds


def _table_rows(text: str, title: str) -> list[str]:
    sec = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [l.strip() for l in sec.splitlines() if l.strip().startswith("|")]


def _index_md() -> str:
    import nbformat
    nb = nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_index_notebook_mirrors_the_readme_paper_table():
    md = _index_md()
    for row in _table_rows(README, "What is from the paper, what is ours")[2:]:
        assert row in md, f"index.ipynb lacks the README's paper-to-code row {row[:60]!r}"
    for cmd in ("make demo", "make test", "hqg enhance", "hqg train", "hqg evaluate", "hqg benchmark"):
        assert cmd in md, cmd


def test_every_notebook_is_on_the_course_map_in_index():
    md = _index_md()
    rows = "\n".join(l for l in md.splitlines() if l.startswith("| `"))
    for nb in sorted((ROOT / "nbs").glob("[0-9]*.ipynb")) + sorted((ROOT / "nbs" / "experiments").glob("*.ipynb")):
        name = nb.stem if nb.parent.name == "nbs" else f"experiments/{nb.stem}"
        assert f"| `{name}` |" in rows, f"index.ipynb's notebook map lacks {name}"
    assert "`tutorials/01`–`05`" in rows and len(list((ROOT / "nbs" / "tutorials").glob("*.ipynb"))) == 5
