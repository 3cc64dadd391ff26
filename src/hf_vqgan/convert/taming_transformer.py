"""Convert a taming `Net2NetTransformer` (minGPT prior plus its stages) into a `VQGANTransformerPipeline` folder.

The weight mapping is described in `hf_vqgan.convert.taming`. Condition stages, and what the pipeline takes for each:

- none (`__is_unconditional__`, `SOSProvider`) or a class (`Labelator`): `pipe()` / `pipe(class_labels=...)`;
- a VQGAN (`VQModel`, `VQSegmentationModel`, `__is_first_stage__`): a `cond_vqgan` and, when `cond_stage_key` says
  what it reads (`"segmentation"`, `"depth"`), a condition processor, so `pipe(condition_image=label_map)` works.
  Segmentation maps become taming's 0/1 one-hot (`one_hot_off_value=0`); all maps are given at the size the
  condition VQGAN reads (taming's `downsample_cond_size` when set);
- `CoordStage` (FacesHQ): no weights; a `"coordinates"` condition processor holds its `n_embed` and `down_factor`
  and tokenizes the coordinate maps itself (`hf_vqgan.conditions.coordinate_tokens`), so
  `pipe(condition_image=coordinate_map(...))` works without a `cond_vqgan`. The processor, not the prior, holds the
  two numbers because turning condition inputs into the prior's inputs is the processor's job; the prior only needs
  how many condition tokens there are and their range, which its config already has;
- `DummyCondStage` (COCO / Open Images scene layouts): the condition *is* the token sequence, built by taming's
  data code (`objects_bbox`, `objects_center_points` builders), so the pipeline takes it as is:
  `pipe(condition_tokens=LongTensor(batch, cond_length))`. Its length is not in the model config; taming's configs
  size `block_size` as image tokens plus condition tokens ("256 + 92"), which gives it.

In all of these, taming's condition codes are rows of the GPT's one token table; here they get rows of their own
(`cond_token_offset + code`), copied from the same table rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .taming import (
    _NET2NET_KNOWN_PARAMS,
    GPT_TARGET,
    IDENTITY_PERMUTER_TARGET,
    LABELATOR_TARGET,
    SOS_PROVIDER_TARGET,
    TRANSFORMER_TARGET,
    VQMODEL_TARGETS,
    _build_vqgan,
    _check_target,
    _model_section,
    _state_dict_of,
    load_renamed_state_dict,
    vqgan_config_from_taming,
)

if TYPE_CHECKING:  # the prior (and transformers) load only when a transformer is converted
    from ..image_processor import VQGANImageProcessor
    from ..models.prior import VQGANPriorConfig


COORD_STAGE_TARGET = "taming.modules.misc.coord.CoordStage"
DUMMY_COND_STAGE_TARGET = "taming.models.dummy_cond_stage.DummyCondStage"


def _coord_stage(cond_params: Mapping) -> tuple[str, dict]:
    missing = [name for name in ("n_embed", "down_factor") if name not in cond_params]
    if missing:
        raise ValueError(f"The `{COORD_STAGE_TARGET}` cond stage has no `params.{missing[0]}`.")
    levels, factor = cond_params["n_embed"], cond_params["down_factor"]
    for name, value in (("n_embed", levels), ("down_factor", factor)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{COORD_STAGE_TARGET}` needs a positive integer `{name}`, got {value!r}.")
    return "coordinates", {"levels": levels, "down_factor": factor}


def _cond_stage(params: Mapping) -> tuple[str, dict]:
    """Classify the condition stage: ("start", {sos_token}), ("class", {num_classes}), ("vqgan", {config}),
    ("coordinates", {levels, down_factor}) or ("tokens", {})."""
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
    if target == COORD_STAGE_TARGET:
        return _coord_stage(cond_params)
    if target == DUMMY_COND_STAGE_TARGET:
        return "tokens", {}
    known = VQMODEL_TARGETS + (LABELATOR_TARGET, SOS_PROVIDER_TARGET, COORD_STAGE_TARGET, DUMMY_COND_STAGE_TARGET)
    _check_target(target, known, "cond stage")
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


def condition_resolution(params: Mapping, cond_vqgan_kwargs: Mapping) -> int:
    """The size of the maps the condition VQGAN reads: taming resizes them to `downsample_cond_size` if it is set."""
    cond_size = int(params.get("downsample_cond_size", -1))
    return cond_size if cond_size > -1 else cond_vqgan_kwargs["sample_size"]


def _condition_layout(params: Mapping, cond_vqgan_kwargs: Mapping, vocab_size: int) -> dict:
    """`cond_codebook_size` and `cond_length` of a VQGAN condition stage, checked against the GPT's vocabulary."""
    cond_factor = 2 ** (len(cond_vqgan_kwargs["channel_multipliers"]) - 1)
    cond_resolution = condition_resolution(params, cond_vqgan_kwargs)
    if cond_resolution % cond_factor:
        raise ValueError(f"The condition size {cond_resolution} is not divisible by its VQGAN's factor {cond_factor}.")
    codebook_size = cond_vqgan_kwargs["codebook_size"]
    if codebook_size > vocab_size:
        raise ValueError(
            f"The cond stage's codebook (n_embed={codebook_size}) exceeds the GPT's vocab_size={vocab_size}."
        )
    return {"cond_codebook_size": codebook_size, "cond_length": (cond_resolution // cond_factor) ** 2}


def _coordinate_layout(params: Mapping, cond: Mapping, image_size: int, vocab_size: int) -> dict:
    """`cond_codebook_size` and `cond_length` of a `CoordStage`: codes `0 .. n_embed` (both ends: a rounding), as far
    as the GPT's table reaches (taming looks them up in it, so a code past it never worked there either)."""
    size = int(params.get("downsample_cond_size", -1))
    size = size if size > -1 else image_size  # the map has the image's size unless taming resizes it
    if size % cond["down_factor"]:
        raise ValueError(f"The coordinate map size {size} is not divisible by `down_factor={cond['down_factor']}`.")
    return {
        "cond_codebook_size": min(cond["levels"] + 1, vocab_size),
        "cond_length": (size // cond["down_factor"]) ** 2,
    }


def _token_layout(block_size: int, num_image_tokens: int, vocab_size: int) -> dict:
    """`cond_codebook_size` and `cond_length` of a `DummyCondStage`: any token of the GPT's vocabulary, as many as
    `block_size` leaves beside the image tokens (taming's scene configs: 348 = 256 + 92)."""
    length = block_size - num_image_tokens
    if length < 1:
        raise ValueError(
            f"The GPT's block_size={block_size} leaves no room for `DummyCondStage` condition tokens beside the "
            f"{num_image_tokens} image tokens (block_size is their sum in taming's scene configs)."
        )
    return {"cond_codebook_size": vocab_size, "cond_length": length}


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
    elif kind == "coordinates":
        layout.update(_coordinate_layout(params, cond, vqgan_kwargs["sample_size"], V))
    elif kind == "tokens":
        layout.update(_token_layout(int(gpt["block_size"]), latent_size**2, V))
    else:
        cond_vqgan_kwargs = vqgan_config_from_taming(cond["config"])
        layout.update(_condition_layout(params, cond_vqgan_kwargs, V))
        if "downsample_cond_size" in params and int(params["downsample_cond_size"]) > -1:
            extra["cond_image_size"] = int(params["downsample_cond_size"])
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
        # One more position than taming's block_size when it is exactly full: only the last, discarded position
        # reads it.
        n_positions=max(int(gpt["block_size"]), prefix_length + latent_size**2),
        embd_pdrop=float(gpt["embd_pdrop"]),
        resid_pdrop=float(gpt["resid_pdrop"]),
        attn_pdrop=float(gpt["attn_pdrop"]),
        **extra,
    )
    details = {"kind": kind, "vocab_size": V, "block_size": int(gpt["block_size"]), **cond}
    details.pop("config", None)
    return prior_config, vqgan_kwargs, cond_vqgan_kwargs, details


def _relocate_rows(table: torch.Tensor, config, details: Mapping, include_condition: bool) -> torch.Tensor:
    """minGPT shares one table between image codes and condition tokens; ours gives each its own rows.

    Rows without a taming counterpart (null class, unused start token) start at zero.
    """
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


def _block_weights(take, index: int, block_size: int) -> dict[str, torch.Tensor]:
    """GPT-2 weights of minGPT block `index`; `take(name)` gives a minGPT tensor (or `None`, recording it missing)."""
    src, dst = f"blocks.{index}.", f"transformer.h.{index}."
    out = {}
    causal = torch.tril(torch.ones(block_size, block_size))
    mask = take(src + "attn.mask")  # a buffer, checked rather than copied
    if mask is not None and (mask.numel() != causal.numel() or not torch.equal(mask.reshape(causal.shape), causal)):
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
    return out


def _mingpt_to_prior(gpt: Mapping[str, torch.Tensor], config, details: Mapping) -> dict[str, torch.Tensor]:
    """Our prior's state dict from minGPT tensors (without the `transformer.` prefix); errors on leftovers."""
    used, missing = set(), []

    def take(name: str) -> torch.Tensor | None:
        if name not in gpt:
            missing.append(name)
            return None
        used.add(name)
        return gpt[name]

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
        out["transformer.wte.weight"] = _relocate_rows(tok_emb, config, details, include_condition=True)
    if head is not None:
        # Only image codes are ever predicted; the head rows of prefix tokens stay zero.
        out["lm_head.weight"] = _relocate_rows(head, config, details, include_condition=False)
    if pos_emb is not None:
        positions = pos_emb.new_zeros(config.n_positions, config.n_embd)
        positions[: pos_emb.shape[1]] = pos_emb[0]  # (block_size, n_embd)
        out["transformer.wpe.weight"] = positions
    for name in ("weight", "bias"):
        if (t := take(f"ln_f.{name}")) is not None:
            out[f"transformer.ln_f.{name}"] = t

    for i in range(config.n_layer):
        out.update(_block_weights(take, i, details["block_size"]))

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
# Where each taming `cond_stage_key` says the condition maps come from.
_CONDITION_TYPE_OF_KEY = {"segmentation": "segmentation", "depth": "depth"}


def taming_processors(config: Mapping, components: Mapping[str, nn.Module]) -> dict[str, VQGANImageProcessor]:
    """
    The image processor of a converted pipeline and its condition processor where the condition is a map:
    `{"image_processor": ..., "condition_processor": ...}`.

    A VQGAN condition stage reading segmentation or depth maps (taming's `cond_stage_key`) gets a processor taking
    maps at the size the condition VQGAN reads (`downsample_cond_size` when set: taming resized the maps to it inside
    the model); a `CoordStage` gets a `"coordinates"` processor holding its `n_embed` and `down_factor`. Other
    condition stages get none: class labels and `DummyCondStage` token sequences need no processing, and for other
    condition keys the pipeline names what is missing.
    """
    from ..image_processor import VQGANImageProcessor
    from ..pipelines.pipeline_vqgan_transformer import default_image_processor

    image_processor = default_image_processor(components["vqgan"], components["transformer"])
    processors = {"image_processor": image_processor}
    params = _model_section(config).get("params") or {}
    kind, cond = _cond_stage(params)
    channels = image_processor.config.channels
    if kind == "coordinates":
        prior = components["transformer"].config
        factor = cond["down_factor"]
        processors["condition_processor"] = VQGANImageProcessor(
            resolution=math.isqrt(prior.cond_length) * factor, channels=channels, condition_type="coordinates",
            lowres_factor=factor, coordinate_levels=cond["levels"],
        )  # fmt: skip
        return processors
    condition_type = _CONDITION_TYPE_OF_KEY.get(params.get("cond_stage_key"))
    cond_vqgan = components.get("cond_vqgan")
    if cond_vqgan is not None and condition_type is not None:
        cond_kwargs = vqgan_config_from_taming(cond["config"])
        processors["condition_processor"] = VQGANImageProcessor(
            resolution=condition_resolution(params, cond_kwargs), channels=channels, condition_type=condition_type,
            num_labels=cond_vqgan.config.in_channels if condition_type == "segmentation" else None,
            one_hot_off_value=0.0,  # taming's segmentation maps are `np.eye(n_labels)[labels]`: 0 and 1
        )  # fmt: skip
    return processors


def save_pipeline_folder(components: Mapping[str, nn.Module], output_dir: str | PathLike) -> Path:
    """Save `components` (`vqgan`, `transformer`, optional `cond_vqgan` and processors) as a pipeline folder:
    safetensors weights, `model_index.json`, and what `DiffusionPipeline.from_pretrained` needs (see the pipeline)."""
    from ..pipelines.pipeline_vqgan_transformer import VQGANTransformerPipeline

    known = {"vqgan", "transformer", "cond_vqgan", "image_processor", "condition_processor"}
    unknown = sorted(set(components) - known)
    if unknown:
        raise ValueError(f"Unknown pipeline components {unknown}; expected {sorted(known)}.")
    output_dir = Path(output_dir)
    VQGANTransformerPipeline(**components).save_pretrained(output_dir)
    return output_dir
