"""Test-wide settings: one torch thread (small networks on 2 shared cores run ~10x faster)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)
