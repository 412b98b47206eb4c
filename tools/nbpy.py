"""Authoring aid: edit a notebook as a percent-format script and write it back.

The notebooks in nbs/ stay the source of truth; the .py files are scratch copies (keep them out of git).

    python tools/nbpy.py to-py nbs/05_model_wavelets.ipynb /tmp/05_model_wavelets.py   # notebook -> script
    python tools/nbpy.py to-nb /tmp/05_model_wavelets.py nbs/05_model_wavelets.ipynb   # script -> notebook (+ nbdev_clean)

Cell tags survive (`# %% tags=["parameters"]`); outputs of the old notebook are dropped.
"""
import hashlib, os, subprocess, sys
import jupytext

KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}

def to_py(src, dst):
    nb = jupytext.read(src)
    jupytext.write(nb, dst, fmt="py:percent")

def to_nb(src, dst):
    nb = jupytext.read(src, fmt="py:percent")
    nb.metadata = dict(KERNEL)
    seen = set()
    for c in nb.cells:
        c.metadata = {k: v for k, v in c.metadata.items() if k == "tags"}
        # stable ids (from the cell's text), so re-converting does not churn the exported modules
        cid = hashlib.sha1(c.source.encode()).hexdigest()[:8]
        while cid in seen: cid = hashlib.sha1(cid.encode()).hexdigest()[:8]
        seen.add(cid); c.id = cid
    jupytext.write(nb, dst, fmt="ipynb")
    nbdev_clean = os.path.join(os.path.dirname(sys.executable), "nbdev_clean")
    subprocess.run([nbdev_clean, "--fname", dst], check=True)

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("to-py", "to-nb"):
        sys.exit(__doc__)
    {"to-py": to_py, "to-nb": to_nb}[sys.argv[1]](sys.argv[2], sys.argv[3])
