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
