"""hqg.bench: synchronised timing, peak-memory measurement (CPU high-water mark / fallback), markdown tables."""
import time

import pytest
import torch

import hqg.bench as bench
from hqg.bench import PeakMemory, timed, median_ms, best_ms, markdown_table, synchronize


def test_timed_counts_warmup_and_repeats_and_measures_seconds():
    calls = []
    ts = timed(lambda: (calls.append(1), time.sleep(0.02)), repeats=4, warmup=2)
    assert len(ts) == 4 and len(calls) == 6
    assert all(0.018 < t < 1.0 for t in ts), ts
    assert 18 < median_ms(ts) < 1000 and best_ms(ts) <= median_ms(ts)


def test_median_and_best_ms_values():
    assert median_ms([0.003, 0.001, 0.002]) == pytest.approx(2.0)
    assert median_ms([0.001, 0.004]) == pytest.approx(2.5)
    assert best_ms([0.5, 0.25]) == pytest.approx(250.0)


@pytest.mark.parametrize("kw, msg", [(dict(repeats=0), "repeats: expected an int >= 1"),
                                     (dict(repeats=1.5), "repeats"), (dict(warmup=-1), "warmup")])
def test_timed_rejects_bad_counts(kw, msg):
    with pytest.raises(ValueError, match=msg):
        timed(lambda: None, **kw)


def test_empty_times_raise():
    for fn in (median_ms, best_ms):
        with pytest.raises(ValueError, match="at least one time"):
            fn([])


def test_synchronize_cpu_is_a_noop():
    assert synchronize("cpu") is None and synchronize(None) is None


def test_peak_memory_sees_a_200_mib_tensor():
    with PeakMemory() as pm:
        x = torch.ones(50 * 2**20)  # 200 MiB, written
        del x
    assert pm.method in ("clear_refs", "ru_maxrss")
    if pm.method == "clear_refs":
        assert pm.exact
        assert 190 <= pm.peak_mb < 400, pm
    else:  # the fallback is exact only when the block sets a new lifetime peak
        assert pm.peak_mb >= 190 or not pm.exact
    assert pm.peak_total_mb >= pm.peak_mb


def test_peak_memory_of_an_empty_block_is_small():
    big = torch.ones(25 * 2**20)  # memory in use *before* the block is not counted
    with PeakMemory() as pm:
        pass
    del big
    assert pm.peak_mb < 50, pm
    assert "PeakMemory(cpu" in repr(pm)


def test_peak_memory_fallback_is_flagged(monkeypatch):
    monkeypatch.setattr(bench, "_reset_hwm", lambda: False)
    with PeakMemory() as pm:
        pass
    assert pm.method == "ru_maxrss"
    assert "clear_refs not writable" in pm.note
    assert pm.exact is False and "upper bound" in pm.note  # no new lifetime peak inside an empty block
    assert pm.peak_mb >= 0


def test_markdown_table_format():
    t = markdown_table([dict(a="x", b=1.25, c=None), dict(a="y", b=3.0, c=7)], {"a": "A", "b": "B", "c": "C"}, ".2f")
    assert t.splitlines() == ["| A | B | C |", "|---|---|---|", "| x | 1.25 |  |", "| y | 3.00 | 7 |"]
    assert markdown_table([dict(k=1)]).splitlines()[0] == "| k |"
    with pytest.raises(ValueError, match="at least one row"):
        markdown_table([])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_memory_cuda():
    with PeakMemory("cuda") as pm:
        x = torch.empty(50 * 2**20, device="cuda")
        del x
    assert pm.method == "cuda" and 199 <= pm.peak_mb < 260
    assert len(timed(lambda: torch.ones(10, device="cuda"), repeats=2, device="cuda")) == 2
