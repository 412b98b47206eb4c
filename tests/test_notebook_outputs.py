"""Stored notebook outputs: the course notebooks show pictures; every notebook's outputs are small and clean."""
import json, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from docs import DOCS, SKIP, hygiene  # noqa: E402

ALL = sorted((ROOT / "nbs").rglob("*.ipynb"))


@pytest.mark.parametrize("path", ALL, ids=[p.relative_to(ROOT).as_posix() for p in ALL])
def test_outputs_are_small_and_clean(path):
    assert hygiene(path) == [], f"{path.relative_to(ROOT)}: {hygiene(path)} (make docs rewrites the course notebooks)"


def test_course_notebooks_keep_pictures_and_only_from_cells_nbdev_test_runs():
    figures = 0
    for rel in DOCS:
        nb = json.loads((ROOT / rel).read_text(encoding="utf-8"))
        outs = [o for c in nb["cells"] for o in c.get("outputs", [])]
        figures += sum("image/jpeg" in o.get("data", {}) for o in outs)
        for c in nb["cells"]:
            if c["cell_type"] == "code" and SKIP.search("".join(c["source"])): assert not c["outputs"], rel
    assert figures >= 4, figures
    for rel in ("nbs/index.ipynb", "nbs/tutorials/01_quickstart.ipynb", "nbs/tutorials/03_explore.ipynb"):
        nb = json.loads((ROOT / rel).read_text(encoding="utf-8"))
        assert any("image/jpeg" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", [])), rel


def test_hygiene_catches_paths_timings_widgets_and_stderr(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": [], "metadata": {}, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": ["run folder: /tmp/hqg-x/run\n", "took 12.5 ms\n"]},
        {"output_type": "stream", "name": "stderr", "text": ["warning\n"]},
        {"output_type": "display_data", "metadata": {}, "data": {"application/vnd.jupyter.widget-view+json": {}}}]}],
          "metadata": {"widgets": {}}, "nbformat": 4, "nbformat_minor": 5}
    p = tmp_path / "n.ipynb"; p.write_text(json.dumps(nb))
    bad = " ".join(hygiene(p))
    for needle in ("absolute path", "timing '12.5 ms'", "stderr", "widget view", "widget state"):
        assert needle in bad, (needle, bad)
