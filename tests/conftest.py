"""Shared pytest fixtures."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _at_most_two_threads():
    "The course machines have 2 cores: more torch threads than that only add contention (restored after each test)."
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    yield
    torch.set_num_threads(old)
