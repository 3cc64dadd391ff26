"""Convert checkpoints of the original taming-transformers code (CompVis/taming-transformers) to hf_vqgan.

A taming model is described by a YAML config (`model.target` names the class, `model.params` its arguments) and a
Lightning checkpoint whose `state_dict` holds the weights. The converter reads both, checks that every setting has an
equivalent here, renames every tensor, and refuses anything it cannot map (an unknown class or option, a tensor left
over, missing or of the wrong shape) with an error that names it: a partial load would give a model that runs but
reproduces nothing.

Supported source formats:

- `taming.models.vqgan.VQModel` and its subclasses `VQNoDiscModel`, `VQSegmentationModel` (which share its weights),
  `GumbelVQ` (`GumbelQuantize`) and `EMAVQ` (`EMAVectorQuantizer`), with `double_z: false`, and for all but `EMAVQ`
  optionally a `remap` of used indices. The result is a `VQGANModel` whose quantizer reproduces the original's (see
  `hf_vqgan.convert.taming_quantizers` for each mapping). Training-only tensors (`loss.*`: the discriminator and
  LPIPS) and the segmentation colouring buffer (`colorize`) are dropped.
- `taming.models.cond_transformer.Net2NetTransformer` with a `taming.modules.transformer.mingpt.GPT`, the identity
  permuter, a first stage as above and one of these condition stages:
    - unconditional (`cond_stage_config: __is_unconditional__` or `unconditional: true`; taming's `SOSProvider`
      prepends `sos_token`);
    - class-conditional (`taming.modules.util.Labelator` with `n_classes`);
    - a VQGAN (`taming.models.vqgan.VQModel` / `VQSegmentationModel`, as for segmentation or depth conditioning, or
      `__is_first_stage__`);
    - coordinates (`taming.modules.misc.coord.CoordStage`) and precomputed condition tokens
      (`taming.models.dummy_cond_stage.DummyCondStage`, scene layouts), see `hf_vqgan.convert.taming_transformer`.
  The result is a pipeline folder: `vqgan`, `transformer` (`VQGANPriorForCausalLM`) and, for VQGAN conditioning,
  `cond_vqgan`.

Not converted (yet), each refused by name:

- `EMAVQ` with `remap` (the original stores the used indices but never applies them);
- permuters other than `taming.modules.transformer.permuter.Identity`;
- condition stages other than those above;
- `CodeGPT` and minGPT models trained with `n_unmasked > 0` (a non-causal prefix).

In the original, condition tokens share the token table with image codes (class `c` and image code `c` are the same
row; only the position tells them apart). Here each kind of token has its own rows (see `VQGANPriorConfig`), so the
converter copies the shared rows into each place: image codes `[0, K)` keep their rows, the start token gets row
`sos_token`, class `c` gets row `c`, and condition code `j` gets row `j`. The image-token logits are unchanged.

Shapes: B batch, T tokens, K codebook size, D code dimension.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..loading import CorruptFileError, check_safetensors_file, pickle_is_complete
from ..models.vqgan import VQGANModel
from .taming_quantizers import (
    EMAVQ_TARGET,
    GUMBEL_TARGET,
    QUANTIZER_PARAMS,
    quantizer_kwargs,
    quantizer_state,
    resolve_used_indices,
)

if TYPE_CHECKING:  # the prior (and transformers) load only when a transformer is converted
    pass

VQMODEL_TARGETS = (
    "taming.models.vqgan.VQModel",
    "taming.models.vqgan.VQNoDiscModel",
    "taming.models.vqgan.VQSegmentationModel",
    GUMBEL_TARGET,
    EMAVQ_TARGET,
)
TRANSFORMER_TARGET = "taming.models.cond_transformer.Net2NetTransformer"
GPT_TARGET = "taming.modules.transformer.mingpt.GPT"
LABELATOR_TARGET = "taming.modules.util.Labelator"
SOS_PROVIDER_TARGET = "taming.modules.util.SOSProvider"
IDENTITY_PERMUTER_TARGET = "taming.modules.transformer.permuter.Identity"

# Known taming classes that have no equivalent here, with the reason given to the user.
UNSUPPORTED_TARGETS = {
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
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except UnicodeDecodeError as err:
        raise CorruptFileError(f"The taming config {path} is not UTF-8 text: not a YAML config, or corrupt.") from err
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise CorruptFileError(f"The taming config {path} is not valid YAML ({problem}{at}).") from err
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
    return _state_dict_of(read_checkpoint(path, allow_pickle=allow_pickle), path)


def read_checkpoint(path: str | PathLike, allow_pickle: bool = False, safe_globals: list | tuple = ()) -> object:
    """
    What a checkpoint file holds, read as `load_taming_checkpoint` reads it (the same checks and errors): a
    `.safetensors` file's tensors, or the object `torch.load(weights_only=not allow_pickle)` returns. `safe_globals`
    are classes the weights-only unpickler may rebuild besides tensors and containers (e.g. `argparse.Namespace`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        check_safetensors_file(path)
        return load_file(str(path))
    if path.stat().st_size == 0:
        raise CorruptFileError(f"The checkpoint {path} is empty (0 bytes): download or copy it again.")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            checkpoint = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        # Suggest unpickling only for a whole pickle that merely holds other objects, never for a damaged file.
        if found and not allow_pickle and pickle_is_complete(path):
            raise ValueError(
                f"{path} holds Python objects other than tensors (it needs `{found.group(1)}`); loading them means "
                "unpickling, which can run arbitrary code. If you trust the file, convert it with "
                "`allow_pickle=True` (`--allow-pickle` on the command line)."
            ) from err
        raise _unreadable_checkpoint(path, err) from err
    except (ModuleNotFoundError, AttributeError) as err:  # only with allow_pickle: a class the pickle names
        raise ImportError(f"Unpickling {path} needs Python code that is not available here: {err}.") from err
    except (EOFError, RuntimeError, ValueError, OSError, UnicodeDecodeError) as err:
        raise _unreadable_checkpoint(path, err) from err
    return checkpoint


def _unreadable_checkpoint(path: Path, err: BaseException) -> CorruptFileError:
    # torch's own text advises `weights_only=False` for any weights-only failure: keep only the reason it found.
    text = str(err).strip()
    found = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
    reason = found.group(1) if found else text.splitlines()[0].split(". ")[0] if text else type(err).__name__
    return CorruptFileError(
        f"The checkpoint {path} ({path.stat().st_size:,} bytes) is not a readable PyTorch checkpoint ({reason}): "
        "it is truncated or corrupt. Download or copy it again."
    )


def _state_dict_of(checkpoint, source) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(
            f"{source} is neither a Lightning checkpoint with a `state_dict` entry nor a mapping of names to tensors."
        )
    return dict(checkpoint)


def refuse_output_in_input(output: str | PathLike, *inputs: str | PathLike) -> None:
    """Raise `ValueError` when the output folder of a conversion is one of its inputs or inside one: saving there
    would overwrite (or mix with) the source model."""
    target = Path(output).resolve()
    for source in map(Path, inputs):
        if target == source.resolve() or target.is_relative_to(source.resolve()):
            raise ValueError(
                f"The output {str(output)!r} is {'the input' if target == source.resolve() else 'inside the input'} "
                f"{str(source)!r}: converting there would overwrite the source. Choose another output folder."
            )


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
    (r"\.remap\.used$", ".used"),  # a remap's used rows (VectorQuantizer2 / GumbelQuantize `used` buffer)
    (r"\.ema_cluster_size$", ".embedding.cluster_size"),  # EMAVectorQuantizer's EmbeddingEMA statistics
    (r"\.ema_embed_sum$", ".embedding.embed_avg"),
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


def vqgan_config_from_taming(
    model_config: Mapping,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    remap_file: str | PathLike | None = None,
    unknown_index: str | int = "random",
) -> dict:
    """
    `VQGANModel` keyword arguments for a taming first-stage config (the whole YAML or its `model` section). Raises a
    `ValueError` naming any class or option that has no equivalent.

    For a `remap`ped quantizer the used indices come from `remap_file`, else the checkpoint's `quantize.used` in
    `state_dict`, else the `.npy` file the config names; `unknown_index` is the policy for rows outside them
    (`"random"`, the only one taming's model classes pass, `"extra"` or an int).
    """
    section = _model_section(model_config)
    if section["target"] == TRANSFORMER_TARGET:
        raise ValueError(f"`{TRANSFORMER_TARGET}` is a transformer: convert it with `convert_taming_transformer`.")
    _check_target(section["target"], VQMODEL_TARGETS, "first/cond stage")
    params = dict(section.get("params") or {})
    for name in ("ddconfig", "n_embed", "embed_dim"):
        if name not in params:
            raise ValueError(f"The `{section['target']}` config has no `params.{name}`.")
    family = QUANTIZER_PARAMS.get(section["target"], {"remap"})
    unknown = sorted(set(params) - _VQMODEL_INERT_PARAMS - {"ddconfig", "n_embed", "embed_dim"} - family)
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
        dropout=float(dd.get("dropout", 0.0)),
        norm_num_groups=32,  # fixed in taming's Normalize
        **quantizer_kwargs(
            section["target"], params, dd, resolve_used_indices(params, state_dict, remap_file), unknown_index
        ),  # fmt: skip
    )


def convert_taming_vqgan(
    config: Mapping,
    state_dict: Mapping[str, torch.Tensor],
    remap_file: str | PathLike | None = None,
    unknown_index: str | int = "random",
) -> VQGANModel:
    """
    Build a `VQGANModel` from a taming first-stage config (the whole YAML dict or its `model` section) and its weights
    (a flat state dict, or a Lightning checkpoint dict with a `state_dict` entry). Training-only tensors (`loss.*`)
    and the `colorize` buffer are dropped; anything else that does not map is an error. `remap_file` and
    `unknown_index` are for `remap`ped quantizers (see `vqgan_config_from_taming`).
    """
    state_dict = _state_dict_of(state_dict, "the checkpoint")
    kwargs = vqgan_config_from_taming(config, state_dict, remap_file, unknown_index)
    if kwargs.get("remap_table_size") is not None and "quantize.used" not in state_dict:
        state_dict = {**state_dict, "quantize.used": resolve_used_indices(_model_section(config)["params"],
                                                                          None, remap_file)}  # fmt: skip
    return _build_vqgan(kwargs, state_dict)


def _build_vqgan(kwargs: dict, state_dict: Mapping[str, torch.Tensor], what: str = "VQModel") -> VQGANModel:
    model = VQGANModel(**kwargs)
    weights = {k: v for k, v in quantizer_state(kwargs, state_dict).items() if not k.startswith("loss.")
               and k != "colorize"}  # fmt: skip
    load_renamed_state_dict(model, weights, taming_vqgan_key, what=f"taming {what} weights")
    return model.eval()


def convert_taming_checkpoint(
    config_path: str | PathLike,
    checkpoint_path: str | PathLike,
    output_dir: str | PathLike,
    allow_pickle: bool = False,
    push_to_hub: str | None = None,
    remap_file: str | PathLike | None = None,
    unknown_index: str | int = "random",
) -> Path:
    """
    Convert a taming checkpoint file and its YAML config into a saved hf_vqgan folder.

    A `VQModel` config gives a `VQGANModel` folder; a `Net2NetTransformer` config gives a pipeline folder
    (`vqgan/`, `transformer/`, `image_processor/`, for image conditions `cond_vqgan/` and `condition_processor/`, and
    `model_index.json`; see `hf_vqgan.convert.taming_transformer`).

    Args:
        config_path: the taming YAML config (`configs/*.yaml`, or the `model.yaml` shipped with a checkpoint).
        checkpoint_path: the `.ckpt` (Lightning) or `.safetensors` weights.
        output_dir: where to write the converted folder.
        allow_pickle (`bool`, defaults to `False`): allow checkpoints that need full unpickling. Only for files
            you trust: unpickling can run arbitrary code.
        push_to_hub (`str`, *optional*): a Hub repo id to upload the folder to after saving.
        remap_file (*optional*): for a first stage with `remap`, the `.npy` of used indices when the config's path is
            not on this machine and the checkpoint lacks the `quantize.used` buffer.
        unknown_index (`str` or `int`, defaults to `"random"`): the remap's policy for rows outside the used ones.

    Returns:
        The output folder.
    """
    refuse_output_in_input(output_dir, config_path, checkpoint_path)
    config = load_taming_config(config_path)
    state_dict = load_taming_checkpoint(checkpoint_path, allow_pickle=allow_pickle)
    target = _model_section(config)["target"]
    if target == TRANSFORMER_TARGET:
        from .taming_transformer import convert_taming_transformer, save_pipeline_folder, taming_processors

        components = convert_taming_transformer(config, state_dict)
        components.update(taming_processors(config, components))

        def save(folder: str | PathLike) -> None:
            save_pipeline_folder(components, Path(folder))
    else:
        _check_target(target, VQMODEL_TARGETS + (TRANSFORMER_TARGET,), "model")
        save = convert_taming_vqgan(config, state_dict, remap_file, unknown_index).save_pretrained
    output_dir = Path(output_dir)
    save(output_dir)
    if push_to_hub:
        from ..hub import push_saved_to_hub

        # Only what the conversion writes is uploaded, whatever else already sits in `output_dir`.
        push_saved_to_hub(push_to_hub, save, commit_message=f"Convert {Path(checkpoint_path).name} from taming")
    return output_dir


# The Net2NetTransformer half lives in its own module; these names stay importable from here.
from .taming_transformer import (  # noqa: E402, F401
    convert_taming_transformer,
    prior_config_from_taming,
    save_pipeline_folder,
    taming_processors,
)
