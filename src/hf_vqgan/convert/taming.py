"""Convert checkpoints of the original taming-transformers code (CompVis/taming-transformers) to hf_vqgan.

A taming model is described by a YAML config (`model.target` names the class, `model.params` its arguments) and a
Lightning checkpoint whose `state_dict` holds the weights. The converter reads both, checks that every setting has an
equivalent here, renames every tensor, and refuses anything it cannot map (an unknown class or option, a tensor left
over, missing or of the wrong shape) with an error that names it: a partial load would give a model that runs but
reproduces nothing.

Supported source formats:

- `taming.models.vqgan.VQModel` (and its subclasses `VQNoDiscModel`, `VQSegmentationModel`, which share its
  weights) with the standard `VectorQuantizer2` quantizer, `remap=None`, and `double_z: false`. The result is a
  `VQGANModel` with `legacy_beta=True` and `commitment_beta=0.25`, the loss taming trained with. Training-only tensors
  (`loss.*`: the discriminator and LPIPS) and the segmentation colouring buffer (`colorize`) are dropped.
- `taming.models.cond_transformer.Net2NetTransformer` with a `taming.modules.transformer.mingpt.GPT`, the identity
  permuter, a first stage as above and one of these condition stages:
    - unconditional (`cond_stage_config: __is_unconditional__` or `unconditional: true`; taming's `SOSProvider`
      prepends `sos_token`);
    - class-conditional (`taming.modules.util.Labelator` with `n_classes`);
    - a VQGAN (`taming.models.vqgan.VQModel`, as for segmentation or depth conditioning, or `__is_first_stage__`).
  The result is a pipeline folder: `vqgan`, `transformer` (`VQGANPriorForCausalLM`) and, for VQGAN conditioning,
  `cond_vqgan`.

Not converted (yet), each refused by name:

- `taming.models.vqgan.GumbelVQ` (`GumbelQuantize`) and `taming.models.vqgan.EMAVQ` (`EMAVectorQuantizer`);
- quantizers with `remap` (index remapping to a used subset of the codebook);
- permuters other than `taming.modules.transformer.permuter.Identity`;
- condition stages other than the three above, e.g. `taming.models.dummy_cond_stage.DummyCondStage` (scene layouts
  from `objects_bbox` / `objects_center_points`) and `taming.modules.misc.coord.CoordStage` (coordinates);
- `CodeGPT` and minGPT models trained with `n_unmasked > 0` (a non-causal prefix).

In the original, condition tokens share the token table with image codes (class `c` and image code `c` are the same
row; only the position tells them apart). Here each kind of token has its own rows (see `VQGANPriorConfig`), so the
converter copies the shared rows into each place: image codes `[0, K)` keep their rows, the start token gets row
`sos_token`, class `c` gets row `c`, and condition code `j` gets row `j`. The image-token logits are unchanged.

Shapes: B batch, T tokens, K codebook size, D code dimension.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..models.vqgan import VQGANModel

if TYPE_CHECKING:  # the prior (and transformers) load only when a transformer is converted
    from ..models.prior import VQGANPriorConfig

VQMODEL_TARGETS = (
    "taming.models.vqgan.VQModel",
    "taming.models.vqgan.VQNoDiscModel",
    "taming.models.vqgan.VQSegmentationModel",
)
TRANSFORMER_TARGET = "taming.models.cond_transformer.Net2NetTransformer"
GPT_TARGET = "taming.modules.transformer.mingpt.GPT"
LABELATOR_TARGET = "taming.modules.util.Labelator"
SOS_PROVIDER_TARGET = "taming.modules.util.SOSProvider"
IDENTITY_PERMUTER_TARGET = "taming.modules.transformer.permuter.Identity"

# Known taming classes that have no equivalent here, with the reason given to the user.
UNSUPPORTED_TARGETS = {
    "taming.models.vqgan.GumbelVQ": "its GumbelQuantize quantizer (a learned projection to code logits) is not supported",
    "taming.models.vqgan.EMAVQ": "its EMAVectorQuantizer checkpoint layout is not supported",
    "taming.models.dummy_cond_stage.DummyCondStage": "scene-layout conditioning (objects_bbox / center points) is not "
    "supported",
    "taming.modules.misc.coord.CoordStage": "coordinate conditioning is not supported",
    "taming.modules.transformer.mingpt.CodeGPT": "CodeGPT (continuous inputs) is not supported",
}

# `model.params` of a VQModel that carry no weights and change nothing at inference.
_VQMODEL_INERT_PARAMS = {"ckpt_path", "ignore_keys", "image_key", "colorize_nlabels", "monitor", "sane_index_shape",
                         "lossconfig", "n_labels"}  # fmt: skip
_DDCONFIG_REQUIRED = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "resolution", "z_channels",
                      "in_channels", "out_ch")  # fmt: skip
_NET2NET_KNOWN_PARAMS = {"ckpt_path", "ignore_keys", "first_stage_key", "cond_stage_key", "pkeep", "sos_token",
                         "unconditional", "permuter_config", "downsample_cond_size", "transformer_config",
                         "first_stage_config", "cond_stage_config"}  # fmt: skip


# ------------------------------------------------------------------------------------------------------ file reading
def load_taming_config(path: str | PathLike) -> dict:
    """Read a taming YAML config (`configs/*.yaml` or a released `model.yaml`) into a dict."""
    try:
        import yaml  # the `training` extra; only conversion needs it
    except ImportError as err:
        raise ImportError(
            "Reading taming configs needs PyYAML: `pip install pyyaml` (or `hf_vqgan[training]`)."
        ) from err
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path} does not hold a YAML mapping (got {type(config).__name__}).")
    return config


def load_taming_checkpoint(path: str | PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """
    Read the weights of a taming checkpoint: a Lightning `.ckpt` (its `state_dict` entry), a plain state dict saved
    with `torch.save`, or a `.safetensors` file.

    `.ckpt` files are opened with `torch.load(weights_only=True)`, which never runs code from the file. Files that
    need arbitrary unpickling (old Lightning checkpoints that pickled their hyper-parameters, say) are refused unless
    `allow_pickle=True` (`--allow-pickle` on the command line): unpickling can run any code, so only do that for
    files from a source you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        needs = f" (it needs `{found.group(1)}`)" if found else ""
        raise ValueError(
            f"{path} holds Python objects other than tensors{needs}; loading them means unpickling, which can run "
            "arbitrary code. If you trust the file, convert it with `allow_pickle=True` (`--allow-pickle` on the "
            "command line)."
        ) from err
    return _state_dict_of(checkpoint, path)


def _state_dict_of(checkpoint, source) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(
            f"{source} is neither a Lightning checkpoint with a `state_dict` entry nor a mapping of names to tensors."
        )
    return dict(checkpoint)


# ------------------------------------------------------------------------------------------------- weight copying
def load_renamed_state_dict(
    model: nn.Module,
    source: Mapping[str, torch.Tensor],
    source_key: Callable[[str], str],
    convert: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    what: str = "checkpoint",
) -> None:
    """
    Fill every tensor of `model.state_dict()` from `source[source_key(name)]`, through `convert(name, tensor)` when
    given. Every source tensor must be used, every model tensor found, and every shape must match; otherwise a
    `ValueError` lists each problem by name, and the model is left untouched.
    """
    target = model.state_dict()
    loaded, used, missing, mismatched = {}, set(), [], []
    for name, tensor in target.items():
        key = source_key(name)
        if key not in source:
            missing.append(f"{key} (for {name}, shape {tuple(tensor.shape)})")
            continue
        used.add(key)
        value = source[key] if convert is None else convert(name, source[key])
        if value.shape != tensor.shape:
            mismatched.append(f"{key}: {tuple(value.shape)} in the {what}, {tuple(tensor.shape)} expected for {name}")
            continue
        loaded[name] = value
    unexpected = sorted(set(source) - used)
    problems = []
    if missing:
        problems.append(f"missing from the {what}: " + ", ".join(missing))
    if unexpected:
        problems.append(f"in the {what} but not mapped to any weight: " + ", ".join(unexpected))
    if mismatched:
        problems.append("shape mismatches: " + "; ".join(mismatched))
    if problems:
        raise ValueError(f"Cannot convert the {what} into {type(model).__name__}:\n- " + "\n- ".join(problems))
    model.load_state_dict(loaded, strict=True)


# ------------------------------------------------------------------------------------------------------------ VQGAN
# Our parameter names -> taming's. Applied in order, each at most once; the decoder's `levels[i]` and taming's
# `up[i]` both count from the full-resolution level, so indices carry over unchanged.
_VQGAN_RENAMES = [
    (r"^(encoder)\.levels\.(\d+)\.resnets\.", r"\1.down.\2.block."),
    (r"^(encoder)\.levels\.(\d+)\.attentions\.", r"\1.down.\2.attn."),
    (r"^(encoder)\.levels\.(\d+)\.resample\.", r"\1.down.\2.downsample."),
    (r"^(decoder)\.levels\.(\d+)\.resnets\.", r"\1.up.\2.block."),
    (r"^(decoder)\.levels\.(\d+)\.attentions\.", r"\1.up.\2.attn."),
    (r"^(decoder)\.levels\.(\d+)\.resample\.", r"\1.up.\2.upsample."),
    (r"\.mid\.resnet_1\.", ".mid.block_1."),
    (r"\.mid\.attention\.", ".mid.attn_1."),
    (r"\.mid\.resnet_2\.", ".mid.block_2."),
    (r"\.shortcut\.", ".nin_shortcut."),
    (r"\.to_q\.", ".q."),
    (r"\.to_k\.", ".k."),
    (r"\.to_v\.", ".v."),
    (r"\.to_out\.", ".proj_out."),
    (r"^quantizer\.", "quantize."),
]


def taming_vqgan_key(name: str) -> str:
    """The taming `VQModel` state-dict key of our `VQGANModel` parameter `name`."""
    for pattern, replacement in _VQGAN_RENAMES:
        name = re.sub(pattern, replacement, name, count=1)
    return name


def vqgan_to_taming_state_dict(model: VQGANModel) -> dict[str, torch.Tensor]:
    """The inverse mapping: our `VQGANModel` weights under taming's `VQModel` key names (no `loss.*` entries)."""
    return {taming_vqgan_key(name): tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _model_section(config: Mapping) -> Mapping:
    """Accept either the whole YAML (`{"model": {...}}`) or its `model` section (`{"target": ..., "params": ...}`)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"A taming config must be a dict, got {type(config).__name__}.")
    section = config.get("model", config)
    if not isinstance(section, Mapping) or "target" not in section:
        raise ValueError(
            f"Expected a taming config with `model.target` and `model.params`, got keys {sorted(config)}."
        )
    return section


def _check_target(target: str, allowed: tuple[str, ...], role: str) -> None:
    if target in allowed:
        return
    if target in UNSUPPORTED_TARGETS:
        raise ValueError(f"Cannot convert {role} `{target}`: {UNSUPPORTED_TARGETS[target]}.")
    raise ValueError(f"Cannot convert {role} `{target}`: expected one of {list(allowed)}.")


def vqgan_config_from_taming(model_config: Mapping) -> dict:
    """
    `VQGANModel` keyword arguments for a taming `VQModel` config (the whole YAML or its `model` section). Raises a
    `ValueError` naming any class or option that has no equivalent.
    """
    section = _model_section(model_config)
    if section["target"] == TRANSFORMER_TARGET:
        raise ValueError(f"`{TRANSFORMER_TARGET}` is a transformer: convert it with `convert_taming_transformer`.")
    _check_target(section["target"], VQMODEL_TARGETS, "first/cond stage")
    params = dict(section.get("params") or {})
    for name in ("ddconfig", "n_embed", "embed_dim"):
        if name not in params:
            raise ValueError(f"The `{section['target']}` config has no `params.{name}`.")
    if params.get("remap") is not None:
        raise ValueError(
            f"Cannot convert a quantizer with `remap={params['remap']!r}` (indices remapped to a used subset of the "
            "codebook); only the plain VectorQuantizer is supported."
        )
    unknown = sorted(set(params) - _VQMODEL_INERT_PARAMS - {"ddconfig", "n_embed", "embed_dim", "remap"})
    if unknown:
        raise ValueError(f"Unknown `{section['target']}` params {unknown}; they have no equivalent in VQGANModel.")

    dd = dict(params["ddconfig"])
    missing = [name for name in _DDCONFIG_REQUIRED if name not in dd]
    if missing:
        raise ValueError(f"`ddconfig` lacks {missing}.")
    # taming's Encoder defaults to double_z=True (a KL autoencoder's mean and variance); a VQGAN must turn it off.
    if dd.get("double_z", True):
        raise ValueError("`ddconfig.double_z` must be false for a VQGAN (it doubles the encoder output channels).")
    for name, expected in [("resamp_with_conv", True), ("give_pre_end", False), ("tanh_out", False),
                           ("use_linear_attn", False), ("attn_type", "vanilla")]:  # fmt: skip
        if name in dd and dd[name] != expected:
            raise ValueError(f"`ddconfig.{name}={dd[name]!r}` is not supported (only {expected!r}).")
    known = set(_DDCONFIG_REQUIRED) | {"double_z", "dropout", "resamp_with_conv", "give_pre_end", "tanh_out",
                                       "use_linear_attn", "attn_type"}  # fmt: skip
    unknown = sorted(set(dd) - known)
    if unknown:
        raise ValueError(f"Unknown `ddconfig` keys {unknown}; they have no equivalent in VQGANModel.")

    return dict(
        in_channels=int(dd["in_channels"]),
        out_channels=int(dd["out_ch"]),
        base_channels=int(dd["ch"]),
        channel_multipliers=tuple(int(m) for m in dd["ch_mult"]),
        num_res_blocks=int(dd["num_res_blocks"]),
        attention_resolutions=tuple(int(r) for r in dd["attn_resolutions"]),
        sample_size=int(dd["resolution"]),
        latent_channels=int(dd["z_channels"]),
        code_dim=int(params["embed_dim"]),
        codebook_size=int(params["n_embed"]),
        dropout=float(dd.get("dropout", 0.0)),
        norm_num_groups=32,  # fixed in taming's Normalize
        commitment_beta=0.25,  # taming's VQModel builds its quantizer with beta=0.25 ...
        legacy_beta=True,  # ... on the codebook term (VectorQuantizer2's legacy=True default)
    )


def convert_taming_vqgan(config: Mapping, state_dict: Mapping[str, torch.Tensor]) -> VQGANModel:
    """
    Build a `VQGANModel` from a taming `VQModel` config (the whole YAML dict or its `model` section) and its weights
    (a flat state dict, or a Lightning checkpoint dict with a `state_dict` entry). Training-only tensors (`loss.*`)
    and the `colorize` buffer are dropped; anything else that does not map is an error.
    """
    return _build_vqgan(vqgan_config_from_taming(config), _state_dict_of(state_dict, "the checkpoint"))


def _build_vqgan(kwargs: dict, state_dict: Mapping[str, torch.Tensor], what: str = "VQModel") -> VQGANModel:
    model = VQGANModel(**kwargs)
    weights = {k: v for k, v in state_dict.items() if not k.startswith("loss.") and k != "colorize"}
    load_renamed_state_dict(model, weights, taming_vqgan_key, what=f"taming {what} weights")
    return model.eval()


# -------------------------------------------------------------------------------------------------- Net2NetTransformer
def _cond_stage(params: Mapping) -> tuple[str, dict]:
    """Classify the condition stage: ("start", {sos_token}), ("class", {num_classes}) or ("vqgan", {config})."""
    cond = params.get("cond_stage_config")
    if params.get("unconditional", False) or cond == "__is_unconditional__":
        # taming then ignores any cond_stage_config and prepends `sos_token` (its SOSProvider).
        return "start", {"sos_token": int(params.get("sos_token", 0))}
    if cond == "__is_first_stage__":
        return "vqgan", {"config": params["first_stage_config"], "shared_with_first_stage": True}
    if not isinstance(cond, Mapping) or "target" not in cond:
        raise ValueError(f"Cannot convert `cond_stage_config={cond!r}`: expected a config with a `target`.")
    target, cond_params = cond["target"], dict(cond.get("params") or {})
    if target == SOS_PROVIDER_TARGET:
        return "start", {"sos_token": int(cond_params.get("sos_token", params.get("sos_token", 0)))}
    if target == LABELATOR_TARGET:
        if "n_classes" not in cond_params:
            raise ValueError(f"The `{LABELATOR_TARGET}` cond stage has no `params.n_classes`.")
        return "class", {"num_classes": int(cond_params["n_classes"])}
    _check_target(target, VQMODEL_TARGETS + (LABELATOR_TARGET, SOS_PROVIDER_TARGET), "cond stage")
    return "vqgan", {"config": cond, "shared_with_first_stage": False}


def _gpt_params(params: Mapping) -> dict:
    transformer = params.get("transformer_config")
    if not isinstance(transformer, Mapping) or "target" not in transformer:
        raise ValueError("The Net2NetTransformer config has no `transformer_config.target`.")
    _check_target(transformer["target"], (GPT_TARGET,), "transformer")
    # Defaults of taming's GPT constructor.
    gpt = {"n_layer": 12, "n_head": 8, "n_embd": 256, "embd_pdrop": 0.0, "resid_pdrop": 0.0, "attn_pdrop": 0.0,
           "n_unmasked": 0}  # fmt: skip
    given = dict(transformer.get("params") or {})
    unknown = sorted(set(given) - set(gpt) - {"vocab_size", "block_size"})
    if unknown:
        raise ValueError(f"Unknown minGPT params {unknown}; they have no equivalent in VQGANPriorForCausalLM.")
    gpt.update(given)
    for name in ("vocab_size", "block_size"):
        if name not in gpt:
            raise ValueError(f"`transformer_config.params.{name}` is required.")
    if gpt["n_unmasked"]:
        raise ValueError(
            f"minGPT with n_unmasked={gpt['n_unmasked']} (a non-causal prefix) is not supported; only causal models."
        )
    return gpt


def prior_config_from_taming(model_config: Mapping) -> tuple[VQGANPriorConfig, dict, dict | None, dict]:
    """
    The `VQGANPriorConfig` of a taming `Net2NetTransformer` config, plus what the weight mapping needs:
    `(prior_config, vqgan_kwargs, cond_vqgan_kwargs or None, details)` where `details` holds the condition kind,
    taming's `sos_token` and vocabulary size.
    """
    from ..models.prior import VQGANPriorConfig

    section = _model_section(model_config)
    if section["target"] != TRANSFORMER_TARGET:
        _check_target(section["target"], (TRANSFORMER_TARGET,), "model")
    params = dict(section.get("params") or {})
    unknown = sorted(set(params) - _NET2NET_KNOWN_PARAMS)
    if unknown:
        raise ValueError(f"Unknown Net2NetTransformer params {unknown}; they have no equivalent here.")
    permuter = params.get("permuter_config")
    if permuter is not None and permuter.get("target") != IDENTITY_PERMUTER_TARGET:
        raise ValueError(
            f"Cannot convert permuter `{permuter.get('target')}`: tokens must be in raster order "
            f"(`{IDENTITY_PERMUTER_TARGET}`)."
        )
    if "first_stage_config" not in params:
        raise ValueError("The Net2NetTransformer config has no `first_stage_config`.")
    vqgan_kwargs = vqgan_config_from_taming(params["first_stage_config"])
    gpt = _gpt_params(params)
    kind, cond = _cond_stage(params)

    factor = 2 ** (len(vqgan_kwargs["channel_multipliers"]) - 1)
    latent_size = vqgan_kwargs["sample_size"] // factor
    K, V = vqgan_kwargs["codebook_size"], int(gpt["vocab_size"])
    if V < K:
        raise ValueError(f"The GPT's vocab_size={V} is smaller than the first stage's codebook (n_embed={K}).")
    layout = dict(codebook_size=K, latent_height=latent_size, latent_width=latent_size)
    extra = {}
    cond_vqgan_kwargs = None
    if kind == "start":
        if not 0 <= cond["sos_token"] < V:
            raise ValueError(f"sos_token={cond['sos_token']} is outside the GPT's vocabulary [0, {V}).")
    elif kind == "class":
        if not 0 < cond["num_classes"] <= V:
            raise ValueError(f"n_classes={cond['num_classes']} must be in [1, vocab_size={V}] (classes share rows).")
        layout["num_classes"] = cond["num_classes"]
    else:
        cond_vqgan_kwargs = vqgan_config_from_taming(cond["config"])
        cond_factor = 2 ** (len(cond_vqgan_kwargs["channel_multipliers"]) - 1)
        # taming resizes condition images to `downsample_cond_size` before encoding them, if it is set.
        cond_size = int(params.get("downsample_cond_size", -1))
        if cond_size > -1:
            extra["cond_image_size"] = cond_size
        cond_resolution = cond_size if cond_size > -1 else cond_vqgan_kwargs["sample_size"]
        if cond_resolution % cond_factor:
            raise ValueError(
                f"The condition size {cond_resolution} is not divisible by its VQGAN's factor {cond_factor}."
            )
        layout["cond_codebook_size"] = cond_vqgan_kwargs["codebook_size"]
        layout["cond_length"] = (cond_resolution // cond_factor) ** 2
        if layout["cond_codebook_size"] > V:
            raise ValueError(
                f"The cond stage's codebook (n_embed={layout['cond_codebook_size']}) exceeds the GPT's vocab_size={V}."
            )
    prefix_length = layout.get("cond_length", 0) or 1
    # taming feeds cat(condition, image)[:, :-1], so its block_size must cover prefix + T - 1 positions.
    fed = prefix_length + latent_size**2 - 1
    if gpt["block_size"] < fed:
        raise ValueError(
            f"The GPT's block_size={gpt['block_size']} is shorter than the {fed} tokens a "
            f"{latent_size}x{latent_size} grid with a {prefix_length}-token prefix needs."
        )
    prior_config = VQGANPriorConfig(
        **layout,
        n_embd=int(gpt["n_embd"]),
        n_layer=int(gpt["n_layer"]),
        n_head=int(gpt["n_head"]),
        # One more position than taming's block_size when it is exactly full: only the last, discarded position reads it.
        n_positions=max(int(gpt["block_size"]), prefix_length + latent_size**2),
        embd_pdrop=float(gpt["embd_pdrop"]),
        resid_pdrop=float(gpt["resid_pdrop"]),
        attn_pdrop=float(gpt["attn_pdrop"]),
        **extra,
    )
    details = {"kind": kind, "vocab_size": V, "block_size": int(gpt["block_size"]), **cond}
    details.pop("config", None)
    return prior_config, vqgan_kwargs, cond_vqgan_kwargs, details


def _mingpt_to_prior(gpt: Mapping[str, torch.Tensor], config, details: Mapping) -> dict[str, torch.Tensor]:
    """Our prior's state dict from minGPT tensors (without the `transformer.` prefix); errors on leftovers."""
    used, missing = set(), []

    def take(name: str) -> torch.Tensor | None:
        if name not in gpt:
            missing.append(name)
            return None
        used.add(name)
        return gpt[name]

    def relocate_rows(table: torch.Tensor, include_condition: bool) -> torch.Tensor:
        # minGPT shares one table between image codes and condition tokens; ours gives each its own rows.
        # Rows without a taming counterpart (null class, unused start token) start at zero.
        K = config.codebook_size
        rows = table.new_zeros(config.vocab_size, table.shape[1])  # (vocab, n_embd)
        rows[:K] = table[:K]
        if include_condition:
            if details["kind"] == "start":
                rows[config.start_token] = table[details["sos_token"]]
            elif details["kind"] == "class":
                offset = config.class_token_offset
                rows[offset : offset + config.num_classes] = table[: config.num_classes]
            else:
                offset = config.cond_token_offset
                rows[offset : offset + config.cond_codebook_size] = table[: config.cond_codebook_size]
        return rows

    V, C = details["vocab_size"], config.n_embd
    for name, expected in [
        ("tok_emb.weight", (V, C)),
        ("head.weight", (V, C)),
        ("pos_emb", (1, details["block_size"], C)),
    ]:
        if name in gpt and tuple(gpt[name].shape) != expected:
            raise ValueError(f"minGPT `transformer.{name}` has shape {tuple(gpt[name].shape)}, expected {expected}.")
    out = {}
    tok_emb, head, pos_emb = take("tok_emb.weight"), take("head.weight"), take("pos_emb")
    if tok_emb is not None:
        out["transformer.wte.weight"] = relocate_rows(tok_emb, include_condition=True)
    if head is not None:
        # Only image codes are ever predicted; the head rows of prefix tokens stay zero.
        out["lm_head.weight"] = relocate_rows(head, include_condition=False)
    if pos_emb is not None:
        positions = pos_emb.new_zeros(config.n_positions, config.n_embd)
        positions[: pos_emb.shape[1]] = pos_emb[0]  # (block_size, n_embd)
        out["transformer.wpe.weight"] = positions
    for name in ("weight", "bias"):
        if (t := take(f"ln_f.{name}")) is not None:
            out[f"transformer.ln_f.{name}"] = t

    causal = torch.tril(torch.ones(details["block_size"], details["block_size"]))
    for i in range(config.n_layer):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        mask = take(src + "attn.mask")  # a buffer, checked rather than copied
        if mask is not None and (
            mask.numel() != causal.numel() or not torch.equal(mask.reshape(causal.shape), causal)
        ):
            raise ValueError(f"minGPT `{src}attn.mask` is not the causal mask (n_unmasked > 0?); cannot convert.")
        for name in ("weight", "bias"):
            q, k, v = (take(f"{src}attn.{p}.{name}") for p in ("query", "key", "value"))
            if q is not None and k is not None and v is not None:
                # transformers' Conv1D computes x @ W + b with W of shape (in, out): nn.Linear's weight transposed.
                # GPT-2 splits c_attn's output into query, key, value in that order.
                out[dst + f"attn.c_attn.{name}"] = torch.cat([t.t() if name == "weight" else t for t in (q, k, v)], -1)
            for ours, theirs in [("attn.c_proj", "attn.proj"), ("mlp.c_fc", "mlp.0"), ("mlp.c_proj", "mlp.2")]:
                if (t := take(f"{src}{theirs}.{name}")) is not None:
                    out[dst + f"{ours}.{name}"] = t.t() if name == "weight" else t
            for ours, theirs in [("ln_1", "ln1"), ("ln_2", "ln2")]:
                if (t := take(f"{src}{theirs}.{name}")) is not None:
                    out[dst + f"{ours}.{name}"] = t

    unexpected = sorted(set(gpt) - used)
    problems = []
    if missing:
        problems.append("missing: " + ", ".join("transformer." + name for name in missing))
    if unexpected:
        problems.append("not mapped to any weight: " + ", ".join("transformer." + name for name in unexpected))
    if problems:
        raise ValueError("Cannot convert the minGPT weights:\n- " + "\n- ".join(problems))
    return {name: t.contiguous() for name, t in out.items()}


def _with_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def convert_taming_transformer(config: Mapping, state_dict: Mapping[str, torch.Tensor]) -> dict[str, nn.Module]:
    """
    Convert a taming `Net2NetTransformer` (config dict and weights) into pipeline components: `"vqgan"` (the first
    stage), `"transformer"` (a `VQGANPriorForCausalLM`) and, for VQGAN conditioning, `"cond_vqgan"`.

    The prior gives the same image-token logits as taming's GPT: for a sequence `prefix + image tokens` (see
    `VQGANPriorForCausalLM.build_input_ids`), `logits[:, prefix_length - 1 : -1, :codebook_size]` equals what
    `Net2NetTransformer.forward` returns (restricted to the image codes).
    """
    from ..models.prior import VQGANPriorForCausalLM

    state_dict = _state_dict_of(state_dict, "the checkpoint")
    prior_config, vqgan_kwargs, cond_vqgan_kwargs, details = prior_config_from_taming(config)
    prefixes = ("first_stage_model.", "cond_stage_model.", "transformer.")
    leftover = sorted(k for k in state_dict if not k.startswith(prefixes))
    if leftover:
        raise ValueError(f"Cannot convert the Net2NetTransformer checkpoint: unexpected tensors {leftover}.")

    components: dict[str, nn.Module] = {}
    components["vqgan"] = _build_vqgan(vqgan_kwargs, _with_prefix(state_dict, "first_stage_model."), "first stage")
    cond_weights = _with_prefix(state_dict, "cond_stage_model.")
    if cond_vqgan_kwargs is not None:
        if not cond_weights and details.get("shared_with_first_stage"):
            cond_weights = _with_prefix(state_dict, "first_stage_model.")
        components["cond_vqgan"] = _build_vqgan(cond_vqgan_kwargs, cond_weights, "cond stage")
    elif cond_weights:
        raise ValueError(
            f"The checkpoint holds cond_stage_model tensors ({sorted(cond_weights)[:3]}...) but its cond stage "
            f"({details['kind']}) has no weights."
        )
    prior = VQGANPriorForCausalLM(prior_config)
    weights = _mingpt_to_prior(_with_prefix(state_dict, "transformer."), prior_config, details)
    load_renamed_state_dict(prior, weights, lambda name: name, what="converted minGPT weights")
    components["transformer"] = prior.eval()
    return components


# ---------------------------------------------------------------------------------------------------------- folders
PIPELINE_CLASS_NAME = "VQGANTransformerPipeline"
_COMPONENT_CLASSES = {"vqgan": "VQGANModel", "transformer": "VQGANPriorForCausalLM", "cond_vqgan": "VQGANModel"}


def pipeline_model_index(components: Mapping[str, nn.Module | None]) -> dict:
    """The diffusers `model_index.json` of a pipeline folder holding `components` (None for an absent one)."""
    import diffusers

    index = {"_class_name": PIPELINE_CLASS_NAME, "_diffusers_version": diffusers.__version__}
    for name, class_name in _COMPONENT_CLASSES.items():
        # diffusers writes [null, null] for an optional component that is absent.
        index[name] = ["hf_vqgan", class_name] if components.get(name) is not None else [None, None]
    return index


def save_pipeline_folder(components: Mapping[str, nn.Module], output_dir: str | PathLike) -> Path:
    """Save each component into `output_dir/<name>` (safetensors) and write `model_index.json`."""
    output_dir = Path(output_dir)
    unknown = sorted(set(components) - set(_COMPONENT_CLASSES))
    if unknown:
        raise ValueError(f"Unknown pipeline components {unknown}; expected {sorted(_COMPONENT_CLASSES)}.")
    for name, module in components.items():
        module.save_pretrained(output_dir / name)
    with open(output_dir / "model_index.json", "w", encoding="utf-8") as f:
        json.dump(pipeline_model_index(components), f, indent=2, sort_keys=True)
        f.write("\n")
    return output_dir


def convert_taming_checkpoint(
    config_path: str | PathLike,
    checkpoint_path: str | PathLike,
    output_dir: str | PathLike,
    allow_pickle: bool = False,
    push_to_hub: str | None = None,
) -> Path:
    """
    Convert a taming checkpoint file and its YAML config into a saved hf_vqgan folder.

    A `VQModel` config gives a `VQGANModel` folder; a `Net2NetTransformer` config gives a pipeline folder
    (`vqgan/`, `transformer/`, `cond_vqgan/` if conditioned on images, and `model_index.json`).

    Args:
        config_path: the taming YAML config (`configs/*.yaml`, or the `model.yaml` shipped with a checkpoint).
        checkpoint_path: the `.ckpt` (Lightning) or `.safetensors` weights.
        output_dir: where to write the converted folder.
        allow_pickle (`bool`, defaults to `False`): allow checkpoints that need full unpickling. Only for files
            you trust: unpickling can run arbitrary code.
        push_to_hub (`str`, *optional*): a Hub repo id to upload the folder to after saving.

    Returns:
        The output folder.
    """
    config = load_taming_config(config_path)
    state_dict = load_taming_checkpoint(checkpoint_path, allow_pickle=allow_pickle)
    target = _model_section(config)["target"]
    output_dir = Path(output_dir)
    if target == TRANSFORMER_TARGET:
        save_pipeline_folder(convert_taming_transformer(config, state_dict), output_dir)
    else:
        _check_target(target, VQMODEL_TARGETS + (TRANSFORMER_TARGET,), "model")
        convert_taming_vqgan(config, state_dict).save_pretrained(output_dir)
    if push_to_hub:
        from ..hub import push_folder_to_hub

        push_folder_to_hub(output_dir, push_to_hub, commit_message=f"Convert {Path(checkpoint_path).name} from taming")
    return output_dir
