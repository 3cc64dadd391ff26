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

# The encoder/decoder of the "digits-tiny" presets.
_DIGITS_TINY_NETWORK = dict(
    in_channels=1,
    out_channels=1,
    base_channels=32,
    channel_multipliers=(1, 2, 2),
    num_res_blocks=1,
    attention_resolutions=(8,),
    sample_size=32,
    latent_channels=32,
    norm_num_groups=8,
)

# VQGANModel kwargs. "digits-tiny" is sized for the built-in 8x8 digits shown at 32x32 on a 2-core CPU;
# the taming ones reproduce the paper's ImageNet f16 tokenizers (taming-transformers configs/imagenet_vqgan.yaml).
VQGAN_PRESETS: dict[str, dict] = {
    "digits-tiny": {
        **_DIGITS_TINY_NETWORK,
        "code_dim": 8,
        "codebook_size": 128,
        "l2_normalize_codes": True,
        "dead_code_steps": 50,
    },
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
    # FSQ/LFQ (issue 18): the digits-tiny network with a fixed grid of 128 codes instead of its codebook: FSQ levels
    # [8, 4, 4] (3 dims), LFQ 2^7 (7 bits).
    "digits-tiny-fsq": {**_DIGITS_TINY_NETWORK, "quantizer_type": "fsq", "fsq_levels": [8, 4, 4]},
    "digits-tiny-lfq": {**_DIGITS_TINY_NETWORK, "quantizer_type": "lfq", "codebook_size": 128},
    "taming-imagenet-f16-1024": {**_TAMING_F16, "code_dim": 256, "codebook_size": 1024},
    "taming-imagenet-f16-16384": {**_TAMING_F16, "code_dim": 256, "codebook_size": 16384},
    # LlamaGen's recipe on the taming f16 backbone: 16,384 l2-normalised 8-dim codes.
    "llamagen-f16-16384": {**_TAMING_F16, "code_dim": 8, "codebook_size": 16384, "l2_normalize_codes": True},
    # FSQ/LFQ (issue 18) on the taming f16 backbone, about as many codes as the 16,384 presets: FSQ's levels for
    # ~2^14 (FSQ paper, Table 3: [8, 8, 8, 6, 5] = 15,360 codes of 5 dims) and LFQ 2^14 (14 bits; MAGVIT-v2 uses
    # 2^18, which works too, but a prior over 262,144 image tokens is a different model from taming's).
    "taming-f16-fsq": {**_TAMING_F16, "quantizer_type": "fsq", "fsq_levels": [8, 8, 8, 6, 5]},
    "taming-f16-lfq": {**_TAMING_F16, "quantizer_type": "lfq", "codebook_size": 16384},
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


# ------------------------------------------------------------------------------------- FSQ/LFQ (issue 18)
# The training flags that choose a tokenizer's quantizer (`train.py vqgan --quantizer_type ...`), by config name.
QUANTIZER_FLAGS = (
    "quantizer_type",
    "fsq_levels",
    "codebook_size",
    "lfq_entropy_weight",
    "lfq_commitment_weight",
    "lfq_entropy_temperature",
)
# Config keys that belong to one quantizer: dropped when the flags switch a preset to another one.
_QUANTIZER_KEYS = QUANTIZER_FLAGS + (
    "code_dim", "commitment_beta", "legacy_beta", "l2_normalize_codes", "use_ema", "ema_decay", "dead_code_steps",
)  # fmt: skip


def with_quantizer(config: dict, **flags) -> dict:
    """
    The `VQGANModel` kwargs `config` (a preset or `--model_config`) with the quantizer the training flags choose.

    `flags` are the `QUANTIZER_FLAGS` (None = not given). Another `quantizer_type` keeps the network and drops the
    old quantizer's settings (a VQ preset's `codebook_size` is kept for LFQ); `fsq_levels` and an LFQ
    `codebook_size` replace the code shape derived from them. A flag that does not apply to the chosen quantizer,
    or a contradiction, is a `ValueError` naming it.
    """
    from ..models.quantizer_choice import resolve_code_shape

    given = {name: value for name, value in flags.items() if value is not None}
    unknown = sorted(set(given) - set(QUANTIZER_FLAGS))
    if unknown:
        raise TypeError(f"Unknown quantizer flags {unknown}; expected some of {list(QUANTIZER_FLAGS)}.")
    config = dict(config)
    old_type = config.get("quantizer_type", "vq")
    new_type = given.get("quantizer_type", old_type)
    if new_type != old_type:
        kept = {"codebook_size": config["codebook_size"]} if new_type == "lfq" and "codebook_size" in config else {}
        config = {key: value for key, value in config.items() if key not in _QUANTIZER_KEYS} | kept
    wrong = [f"--{name}" for name in given if name.startswith("lfq_")] if new_type != "lfq" else []
    wrong += ["--fsq_levels"] if "fsq_levels" in given and new_type != "fsq" else []
    wrong += ["--codebook_size"] if "codebook_size" in given and new_type == "fsq" else []
    if wrong:
        hint = " (FSQ's codebook size is the product of --fsq_levels)" if new_type == "fsq" else ""
        raise ValueError(f"{', '.join(wrong)} do not apply to quantizer_type {new_type!r}{hint}.")
    if new_type == "fsq" and "fsq_levels" in given or new_type == "lfq" and "codebook_size" in given:
        config = {key: value for key, value in config.items() if key not in ("code_dim", "codebook_size")}
    config.update(given)
    resolve_code_shape(new_type, config.get("code_dim"), config.get("codebook_size"), config.get("fsq_levels"))
    return config


def check_pretrained_quantizer(model_config, **flags) -> dict:
    """
    Check the quantizer flags against a pretrained tokenizer's config, and return the ones `from_pretrained` may
    override: the LFQ loss weights of an LFQ tokenizer. Its quantizer type, FSQ levels and codebook size are what
    it was trained with: a flag that disagrees is a `ValueError` saying so.
    """
    given = {name: value for name, value in flags.items() if value is not None}
    quantizer_type = model_config.get("quantizer_type", "vq")
    for name in ("quantizer_type", "fsq_levels", "codebook_size"):
        if name in given and _normalised(given[name]) != _normalised(model_config.get(name)):
            raise ValueError(
                f"--{name} {given[name]!r} disagrees with the pretrained tokenizer's {name}={model_config.get(name)!r}"
                ": a trained tokenizer keeps its quantizer; drop the flag, or train a new tokenizer (--preset)."
            )
    weights = {name: value for name, value in given.items() if name.startswith("lfq_")}
    if weights and quantizer_type != "lfq":
        raise ValueError(
            f"{', '.join('--' + name for name in weights)} apply to LFQ tokenizers; the pretrained one uses "
            f"quantizer_type {quantizer_type!r}."
        )
    return weights


def _normalised(value):
    return list(value) if isinstance(value, tuple) else value
