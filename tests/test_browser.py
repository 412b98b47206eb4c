"""Real-browser test of the `GuidanceExplorer` (slow; run with `make test-browser`).

Starts JupyterLab on 127.0.0.1 with a random token, opens a small explorer notebook (written into the test's
tmp_path) in headless Debian chromium driven by playwright-core (tests/browser/explorer.js), runs all cells,
presses ArrowRight on the "guidance A" slider and checks that the figure shown in the browser changed, equals
the figure the kernel rendered, and that the shipped model's enhanced image moved by a mean |change| >= 0.01. Screenshots are saved in tmp_path (their paths are printed; see `pytest -s`).

Setup once: `bash tests/browser/setup.sh` (apt-get chromium, npm playwright-core into /tmp/hqg-browser).
Without chromium/node/playwright-core the test is skipped, unless HQG_BROWSER_SETUP=1, which runs the setup script.
Env: HQG_BROWSER_NODE_DIR (playwright-core location, default /tmp/hqg-browser), HQG_CHROMIUM (default: chromium
on PATH).
"""
import hashlib, json, os, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NODE_DIR = Path(os.environ.get("HQG_BROWSER_NODE_DIR", "/tmp/hqg-browser"))


def _missing():
    "What the browser test lacks, or '' when everything is there."
    miss = []
    if not (os.environ.get("HQG_CHROMIUM") or shutil.which("chromium")): miss.append("chromium")
    if not shutil.which("node"): miss.append("node")
    if not (NODE_DIR / "node_modules" / "playwright-core").is_dir(): miss.append(f"playwright-core in {NODE_DIR}")
    return ", ".join(miss)


@pytest.fixture(scope="module")
def browser_tools():
    miss = _missing()
    if miss and os.environ.get("HQG_BROWSER_SETUP") == "1":
        subprocess.run(["bash", str(HERE / "browser" / "setup.sh")], check=True, timeout=900)
        miss = _missing()
    if miss: pytest.skip(f"browser test needs {miss}: run `bash tests/browser/setup.sh` or set HQG_BROWSER_SETUP=1")
    return os.environ.get("HQG_CHROMIUM") or shutil.which("chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


NOTEBOOK_CELLS = [
    # The shipped model (data_samples/models/fundus_tiny.pt) and the seven styled guides of data_samples/fundus/guides:
    # a trained model whose output follows its guide, so moving the slider must visibly change the image.
    """import hashlib, json, torch
from pathlib import Path
from hqg.model.networks import HQGNet
from hqg.app.explorer import GuidanceExplorer
from hqg.data.io import list_images
DATA = Path({data!r})
net = HQGNet.from_checkpoint(Path({model!r}))
guides = list_images(DATA / "guides")""",
    # the kernel writes the sha256 of each figure it renders (to compare with what the browser shows) and the mean
    # absolute change of the enhanced image between consecutive renders
    """ex = GuidanceExplorer(net, [DATA / "test" / "lq" / "test_00_fov.png"], guides)
SHAS, CHANGES = Path({shas!r}), Path({changes!r})
_prev = [ex.render()["enh"]]
def _log(change=None):
    SHAS.open("a").write(hashlib.sha256(ex.image.value).hexdigest() + "\\n")
    enh = ex.render()["enh"]
    CHANGES.open("a").write(json.dumps(float(abs(enh - _prev[0]).mean())) + "\\n"); _prev[0] = enh
_log(); ex.image.observe(_log, names="value")
ex""",
]


def _write_notebook(path: Path, data: Path, shas: Path, changes: Path):
    import nbformat
    nb = nbformat.v4.new_notebook()
    model = ROOT / "data_samples" / "models" / "fundus_tiny.pt"
    nb.cells = [nbformat.v4.new_code_cell(c.format(data=str(data), shas=str(shas), changes=str(changes), model=str(model)))
                for c in NOTEBOOK_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def _wait_status(url: str, proc, timeout: float = 60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f"jupyter lab exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: return time.time() - t0
        except OSError: pass
        time.sleep(0.25)
    raise TimeoutError(f"JupyterLab did not answer {url.split('?')[0]} within {timeout} s")


def test_guidance_slider_changes_image_in_browser(browser_tools, tmp_path):
    t0 = time.time()
    nb = tmp_path / "explorer.ipynb"; shas = tmp_path / "kernel_shas.txt"; changes = tmp_path / "kernel_changes.txt"
    _write_notebook(nb, ROOT / "data_samples" / "fundus", shas, changes)
    port, token = _free_port(), secrets.token_hex(16)
    jupyter = Path(sys.executable).with_name("jupyter")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "jcfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "jrt"),
               MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    env.pop("HQG_TEST", None)
    log = (tmp_path / "jupyter.log").open("w")
    lab = subprocess.Popen([str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                            f"--ServerApp.token={token}", "--allow-root", f"--ServerApp.root_dir={tmp_path}",
                            "--ServerApp.open_browser=False", "--LabApp.news_url=None",
                            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                           stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_status(f"{base}/api/status?token={token}", lab)
        env_node = dict(os.environ, HQG_BROWSER_NODE_DIR=str(NODE_DIR), HQG_CHROMIUM=browser_tools)
        r = subprocess.run(["node", str(HERE / "browser" / "explorer.js"), base, token, nb.name, str(tmp_path)],
                           capture_output=True, text=True, timeout=240, env=env_node)
        print(r.stdout[-3000:], r.stderr[-3000:])
        assert r.returncode == 0, f"browser script failed:\n{r.stderr[-3000:]}"
        res = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("RESULT "))[7:])
    finally:
        lab.terminate()
        try: lab.wait(timeout=15)
        except subprocess.TimeoutExpired: lab.kill(); lab.wait(timeout=10)
        log.close()
    print(f"screenshot: {res.get('screenshot')}  (before the move: {tmp_path / 'explorer_before.png'}); "
          f"browser test took {time.time() - t0:.1f} s")
    assert "error" not in res, res["error"]
    assert res["readout_before"] == "0" and res["readout_after"] == "1", (res["readout_before"], res["readout_after"])
    assert res["before"]["sha"] != res["after"]["sha"]          # the figure in the browser changed
    kernel = shas.read_text().split()
    assert res["before"]["sha"] == kernel[0]                    # the browser showed the kernel's first figure ...
    assert res["after"]["sha"] == kernel[-1]                    # ... and then its figure for guidance A = 1
    assert len(set(kernel)) >= 2
    moved = [float(v) for v in changes.read_text().split()][1:]   # first line: the initial render (0)
    assert max(moved) >= 0.01, moved                             # the shipped model's output visibly followed the guide
    shots = Path(os.environ.get("HQG_BROWSER_SHOTS", ROOT / "runs" / "browser"))
    shots.mkdir(parents=True, exist_ok=True)
    for name in ("explorer_before.png", Path(res["screenshot"]).name):
        shutil.copy(tmp_path / name if name == "explorer_before.png" else res["screenshot"], shots / name)
    print(f"mean |change| of the enhanced image after the move: {max(moved):.4f}; screenshots kept in {shots}")
    assert Path(res["screenshot"]).stat().st_size > 10_000
