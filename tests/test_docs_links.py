"""The user docs point only at files the repository has, and carry no internal issue numbers."""
import json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WRITTEN_BY_HQG = {"results.md", "table.md", "downstream.md", "sweep_summary.md", "benchmark.md"}  # run outputs


def _docs() -> list[Path]:
    return ([ROOT / n for n in ("README.md", "CONTRIBUTING.md", "RESULTS.md") if (ROOT / n).is_file()]
            + [ROOT / "data_samples" / "LICENSES.md"] + sorted((ROOT / "nbs").rglob("*.ipynb"))
            + sorted((ROOT / "hqg").glob("*.py")))


def _prose(path: Path) -> str:
    "A file's prose: markdown cells of a notebook (and the code cells' comments), or the whole text file."
    if path.suffix != ".ipynb": return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    md = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    comments = [line.split("# ", 1)[1] for c in cells if c["cell_type"] == "code"
                for line in "".join(c["source"]).splitlines() if re.search(r"(^|\s)# ", line)]
    return "\n".join(md + comments)


DOCS = _docs()


@pytest.mark.parametrize("path", DOCS, ids=[p.relative_to(ROOT).as_posix() for p in DOCS])
def test_every_relative_link_and_md_mention_exists(path):
    text, missing = _prose(path), []
    text = re.sub(r"\$[^$\n]*\$", "", re.sub(r"\$\$.*?\$\$", "", text, flags=re.S))  # formulas: no links
    links = re.findall(r"\]\(([^)\s]+)\)", text) if path.suffix != ".py" else []  # markdown links (not in code)
    for target in links:
        if re.match(r"[a-z]+:|#", target): continue  # URLs and anchors
        t = target.split("#")[0]
        if t and not ((path.parent / t).exists() or (ROOT / t).exists()): missing.append(target)
    for name in re.findall(r"(?<![\w/.-])([\w./-]+\.md)\b", text):  # "X.md" mentions
        if Path(name).name in WRITTEN_BY_HQG: continue
        if not ((path.parent / name).exists() or (ROOT / name).exists()): missing.append(name)
    assert not missing, f"{path.relative_to(ROOT)} refers to files the repository does not have: {sorted(set(missing))}"


USER_DOCS = [p for p in DOCS if p.suffix in (".md", ".ipynb")]


@pytest.mark.parametrize("path", USER_DOCS, ids=[p.relative_to(ROOT).as_posix() for p in USER_DOCS])
def test_no_internal_issue_numbers_in_user_docs(path):
    hits = re.findall(r"\b[Ii]ssues? #?\d+", _prose(path))
    assert not hits, f"{path.relative_to(ROOT)} cites internal issue numbers: {hits}"
