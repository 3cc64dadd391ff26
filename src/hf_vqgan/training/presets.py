"""Where the stages get their models: named configurations (`--preset NAME`) and tokenizer folders."""

from __future__ import annotations

import copy
from pathlib import Path

# The encoder/decoder of taming-transformers' f16 ImageNet tokenizers (configs/imagenet_vqgan.yaml).
_TAMING_F16 = dict(
    base_channels=128,
    channel_multipliers=(1, 1, 2, 2, 4),
    num_res_blocks=2,
    attention_resolutions=(16,),
    sample_size=256,
    latent_channels=256,
)

# VQGANModel kwargs. "digits-tiny" is sized for the built-in 8x8 digits shown at 32x32 on a 2-core CPU;
# the taming ones reproduce the paper's ImageNet f16 tokenizers (taming-transformers configs/imagenet_vqgan.yaml).
VQGAN_PRESETS: dict[str, dict] = {
    "digits-tiny": dict(
        in_channels=1,
        out_channels=1,
        base_channels=32,
        channel_multipliers=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        sample_size=32,
        latent_channels=32,
        code_dim=8,
        codebook_size=128,
        norm_num_groups=8,
        l2_normalize_codes=True,
        dead_code_steps=50,
    ),
    # Condition tokenizer for `--condition_type lowres` on the digits: the 4x4 map of a 32x32 digit (factor 8) is
    # tokenised without downsampling (f1), one code per low-resolution pixel, so the prior sees 16 condition tokens.
    "digits-lowres-cond": dict(
        in_channels=1,
        out_channels=1,
        base_channels=32,
        channel_multipliers=(1,),
        num_res_blocks=1,
        attention_resolutions=(),
        sample_size=4,
        latent_channels=32,
        code_dim=8,
        codebook_size=128,
        norm_num_groups=8,
        l2_normalize_codes=True,
        dead_code_steps=50,
    ),
    "taming-imagenet-f16-1024": {**_TAMING_F16, "code_dim": 256, "codebook_size": 1024},
    "taming-imagenet-f16-16384": {**_TAMING_F16, "code_dim": 256, "codebook_size": 16384},
    # LlamaGen's recipe on the taming f16 backbone: 16,384 l2-normalised 8-dim codes.
    "llamagen-f16-16384": {**_TAMING_F16, "code_dim": 8, "codebook_size": 16384, "l2_normalize_codes": True},
}

# VQGANPriorConfig size kwargs (the token layout comes from the tokenizer and the data).
PRIOR_PRESETS: dict[str, dict] = {
    # Dropout: 1,617 training digits are few for 1.8M parameters; without it the prior memorises them.
    "digits-tiny": dict(n_layer=4, n_embd=192, n_head=4, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1),
    "small": dict(n_layer=8, n_embd=512, n_head=8),
    # taming's class-conditional ImageNet transformer (cin_transformer.yaml): 24 layers, 1536 wide, 16 heads.
    "taming-imagenet": dict(n_layer=24, n_embd=1536, n_head=16),
}


def _lookup(table: dict[str, dict], name: str, kind: str) -> dict:
    if name not in table:
        raise ValueError(f"Unknown {kind} preset {name!r}; expected one of {sorted(table)}.")
    return copy.deepcopy(table[name])


def vqgan_preset(name: str) -> dict:
    """The `VQGANModel` kwargs of a named preset."""
    return _lookup(VQGAN_PRESETS, name, "VQGAN")


def prior_preset(name: str) -> dict:
    """The prior size kwargs (`n_layer`, `n_embd`, `n_head`) of a named preset."""
    return _lookup(PRIOR_PRESETS, name, "prior")


def load_vqgan(name_or_path: str, **kwargs):
    """A `VQGANModel` from a model folder or Hub repo, or from the `vqgan` subfolder of a pipeline folder or repo."""
    from ..models.vqgan import VQGANModel

    local = Path(name_or_path)
    if (local / "model_index.json").is_file() or (not local.exists() and _is_pipeline_repo(name_or_path)):
        return VQGANModel.from_pretrained(name_or_path, subfolder="vqgan", **kwargs)
    return VQGANModel.from_pretrained(name_or_path, **kwargs)


def _is_pipeline_repo(repo_id: str) -> bool:
    from huggingface_hub import file_exists

    try:
        return file_exists(repo_id, "model_index.json")
    except Exception:  # offline or unknown repo: let from_pretrained raise its own message
        return False
