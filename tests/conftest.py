"""Shared pytest setup: tiny, deterministic, single-threaded CPU tests."""
import os
import pytest
import torch

torch.set_num_threads(int(os.environ.get("HQG_TEST_THREADS", "1")))
torch.use_deterministic_algorithms(False)  # the tests must not depend on deterministic kernels
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def repo_root():
    return ROOT


def pytest_collection_modifyitems(config, items):
    "HQG_TEST_SHUFFLE=<seed>: run the tests in a seeded random order (`make test-shaken`), to catch order dependence."
    seed = os.environ.get("HQG_TEST_SHUFFLE")
    if seed:
        import random
        random.Random(int(seed)).shuffle(items)
