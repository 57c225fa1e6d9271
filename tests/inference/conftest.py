import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: two OpenMP threads wait on each other (30-100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
