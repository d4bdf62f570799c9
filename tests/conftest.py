"""Shared test settings: deterministic hypothesis profile, float64 helpers."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One thread: the suite is made of small ops, where extra threads mostly spin; on a busy
# 2-core machine two threads made some tests 10-30x slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Back to one thread after every test: the CLI's ``--threads`` (run in-process) changes it."""
    yield
    torch.set_num_threads(1)
