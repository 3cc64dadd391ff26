from __future__ import annotations

import pytest


@pytest.fixture
def tiny_vqgan_config() -> dict:
    """A `VQGANModel` config that builds and runs in milliseconds: f=2, attention at 16x16 (level 1 of 32 px)."""
    return dict(
        base_channels=32,
        channel_multipliers=(1, 2),
        attention_resolutions=(16,),
        sample_size=32,
        latent_channels=16,
        code_dim=8,
        codebook_size=64,
        norm_num_groups=8,
    )


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run many small ops: one thread avoids oversubscribing a 2-core machine (20x faster here)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
