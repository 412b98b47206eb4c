"""The `hqg` command: lists what works, writes run folders, fails with one clear line."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

from hqg.cli import main, build_parser

ROOT = Path(__file__).resolve().parents[1]
HQG = Path(sys.executable).with_name("hqg")


def test_console_script_help_lists_commands():
    r = subprocess.run([str(HQG), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for cmd in ("samples", "bench", "demo"):
        assert cmd in r.stdout


def test_demo_writes_figures_and_table(tmp_path, capsys):
    assert main(["demo", "--data", str(ROOT / "data_samples"), "--out", str(tmp_path)]) == 0
    (run,) = list(tmp_path.iterdir())
    assert (run / "demo.png").stat().st_size > 10_000
    rows = json.loads((run / "wavelet_energy.json").read_text())
    assert len(rows) == 4 * 3 and {r["level"] for r in rows} == {1, 2, 3}
    # the fundus degradation removes fine detail on the crops with vessels: level-1 energy drops
    crop = [r for r in rows if r["image"] == "test_01_crop.png" and r["level"] == 1][0]
    assert crop["detail_energy_degraded"] < crop["detail_energy_clean"]
    assert "foundation demo written to" in capsys.readouterr().out
    # a second run never overwrites the first
    assert main(["demo", "--data", str(ROOT / "data_samples"), "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("argv, needle", [
    (["demo", "--data", "/no/such/folder"], "/no/such/folder"),
])
def test_user_errors_are_one_line(tmp_path, capsys, argv, needle):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hqg: error: ") and needle in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_samples_command_regenerates_a_set(tmp_path, capsys):
    assert main(["samples", "--out", str(tmp_path), "--sets", "ccm"]) == 0
    assert "ccm: 36 files" in capsys.readouterr().out
    assert len(list((tmp_path / "ccm").rglob("*.png"))) == 36


def test_bench_wavelets_prints_both_times(capsys):
    assert main(["bench", "wavelets", "--batch", "1", "--image-size", "64", "--repeats", "2"]) == 0
    out = capsys.readouterr().out.lower()
    assert "pywavelets" in out or "pywt" in out
    assert "hqg" in out


def test_bench_generator_prints_params_and_times(capsys):
    assert main(["bench", "generator", "--sizes", "tiny", "--batch", "1", "--image-size", "32", "--repeats", "1",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "M params" in out and "ms" in out
