"""Fixtures shared across test files."""
import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one BLAS thread is several times faster than two fighting a busy shared CPU.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
