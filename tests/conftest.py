import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """GPU tests skip, with the reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _peak_cache(tmp_path_factory):
    """The measured GEMM peak (bench/peak.py) is cached in a folder of this session, not the user's ~/.cache."""
    import os

    before = os.environ.get("DEIT_BENCH_CACHE")
    os.environ["DEIT_BENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        del os.environ["DEIT_BENCH_CACHE"]
    else:
        os.environ["DEIT_BENCH_CACHE"] = before
