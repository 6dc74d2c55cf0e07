"""Shared by the trainer tests: one torch thread, denormals flushed."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread_no_denormals():
    """Tiny networks gain nothing from a second thread, and OpenMP threads that wait on a busy
    2-core machine cost seconds; denormal floats slow CPU convolutions (as the CLI avoids too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)
