"""`make docs`: execute the course notebooks in place so GitHub shows their figures, tables and printed shapes.

Each notebook in DOCS runs in its own folder under nbdev_test's smoke settings (IN_TEST=1), with figures as
72-dpi JPEG; then stderr streams (warnings, progress bars) and widget views are dropped (widgets need a live
kernel), and `hygiene` checks what is left: bounded size, no widget state, no absolute paths, no timings.
`nbdev_clean` runs last, as `make test` expects. tests/test_notebook_outputs.py applies the same checks.
"""
import json, os, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["nbs/index.ipynb", "nbs/05_model_wavelets.ipynb", "nbs/01a_data_synth.ipynb", "nbs/02_data_degrade.ipynb",
        "nbs/04_data_samples.ipynb",
        "nbs/tutorials/01_quickstart.ipynb", "nbs/tutorials/02_train_your_folder.ipynb",
        "nbs/tutorials/03_explore.ipynb", "nbs/tutorials/04_reproduce_benchmark.ipynb"]
MAX_BYTES = 400_000  # per notebook, outputs included
WIDGET = "application/vnd.jupyter.widget-view+json"
ABS_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|home|root|Users|private|var|content)/")
SKIP = re.compile(r"^#\|\s*(?:slow|notest|gpu)\b", re.M)  # nbdev_test's flags (settings.ini tst_flags)
TIMING = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|µs|us|s/step|step/s|s/it|it/s|images/s)\b|\bin \d+(?:\.\d+)? ?s\b")


def _text(o: dict) -> str:
    t = o.get("text") or o.get("data", {}).get("text/plain") or o.get("data", {}).get("text/markdown") or ""
    return "".join(t) if isinstance(t, list) else t


def hygiene(path: Path) -> list[str]:
    "What is wrong with a notebook's stored outputs (empty list: nothing)."
    raw = path.read_text(encoding="utf-8"); nb = json.loads(raw); bad = []
    if len(raw.encode()) > MAX_BYTES: bad.append(f"{len(raw.encode())} bytes > {MAX_BYTES}")
    if "widgets" in nb.get("metadata", {}): bad.append("widget state in the notebook metadata")
    for i, c in enumerate(nb["cells"]):
        for o in c.get("outputs", []):
            if WIDGET in o.get("data", {}): bad.append(f"cell {i}: a widget view")
            if o.get("output_type") == "stream" and o.get("name") == "stderr": bad.append(f"cell {i}: stderr output")
            t = _text(o)
            if ABS_PATH.search(t): bad.append(f"cell {i}: absolute path {ABS_PATH.search(t).group(0)!r}")
            if TIMING.search(t): bad.append(f"cell {i}: a timing {TIMING.search(t).group(0)!r}")
    return bad


def _strip(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c["cell_type"] != "code": continue
        outs = []
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stderr": continue
            if WIDGET in o.get("data", {}): o["data"] = {k: v for k, v in o["data"].items() if k == "text/plain"}
            outs.append(o)
        c["outputs"] = outs
    nb.get("metadata", {}).pop("widgets", None)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(names=None) -> int:
    bin_ = Path(sys.executable).parent
    env = {**os.environ, "IN_TEST": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    args = ['--ExecutePreprocessor.extra_arguments=["--IPKernelApp.log_level=ERROR", '
            '"--InlineBackend.figure_formats=jpeg", "--InlineBackend.rc={\'figure.dpi\': 72, \'savefig.dpi\': 72}"]',
            "--ExecutePreprocessor.timeout=900"]
    failed = []
    for rel in names or DOCS:
        p = ROOT / rel
        print(f"docs: {rel}", flush=True)
        nb = json.loads(p.read_text(encoding="utf-8")); run = p.with_name(f".docs-{p.name}")
        skip = [c["cell_type"] == "code" and SKIP.search("".join(c["source"])) is not None for c in nb["cells"]]
        tmp = {**nb, "cells": [{**c, "source": ["pass  # skipped: a flagged cell"]} if s else c for c, s in zip(nb["cells"], skip)]}
        run.write_text(json.dumps(tmp, indent=1, ensure_ascii=False), encoding="utf-8")
        try:
            r = subprocess.run([str(bin_ / "jupyter"), "nbconvert", "--to", "notebook", "--execute", "--inplace", run.name,
                                *args], cwd=p.parent, env=env, capture_output=True, text=True)
            if r.returncode: raise RuntimeError(f"{rel} failed:\n{r.stderr[-3000:]}")
            done = json.loads(run.read_text(encoding="utf-8"))
        finally: run.unlink(missing_ok=True)
        for c, d, s in zip(nb["cells"], done["cells"], skip):  # outputs of the cells nbdev_test runs; none elsewhere
            if c["cell_type"] == "code": c["outputs"] = [] if s else d.get("outputs", [])
        p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        _strip(p)
        subprocess.run([str(bin_ / "nbdev_clean"), "--fname", str(p)], cwd=ROOT, check=True)
        bad = hygiene(p)
        if bad: failed.append(rel); print(f"  {rel}: " + "; ".join(bad), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or None))
