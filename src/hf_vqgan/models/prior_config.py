"""Configuration of the VQGAN prior ([`VQGANPriorConfig`]): the GPT-2 settings that hold taming's minGPT and the token
layout of images, classes and conditions. The model is in `prior.py`, which registers both with the Auto classes.
"""

from __future__ import annotations

import os

from huggingface_hub.dataclasses import strict
from transformers import GPT2Config

# transformers' mechanism for classes outside its tree: config.json's `auto_map` names a module file saved next to it,
# which `Auto*.from_pretrained(folder, trust_remote_code=True)` imports. Ours holds no code, only imports the installed
# package, so a folder never carries a stale copy of the model.
AUTO_MAP_MODULE = "hf_vqgan_prior"
AUTO_MAP = {
    "AutoConfig": f"{AUTO_MAP_MODULE}.VQGANPriorConfig",
    "AutoModel": f"{AUTO_MAP_MODULE}.VQGANPriorModel",
    "AutoModelForCausalLM": f"{AUTO_MAP_MODULE}.VQGANPriorForCausalLM",
}
AUTO_MAP_SOURCE = """\
# Lets transformers' Auto classes load this folder without `import hf_vqgan` (pip install hf-vqgan):
#     AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
# The classes are those of the installed package; this file holds no model code.
from hf_vqgan.models.prior import VQGANPriorConfig, VQGANPriorForCausalLM, VQGANPriorModel

__all__ = ["VQGANPriorConfig", "VQGANPriorForCausalLM", "VQGANPriorModel"]
"""


@strict
class VQGANPriorConfig(GPT2Config):
    r"""
    Configuration of [`VQGANPriorForCausalLM`], a GPT-2 over the codebook indices of a VQGAN.

    **Token layout** (documented here only; every helper reads the properties below). With K = `codebook_size`,
    C = `num_classes` and M = `cond_codebook_size`:

    | ids                                  | meaning                                   | property            |
    |--------------------------------------|-------------------------------------------|---------------------|
    | `[0, K)`                             | image code k is token k                   | `image_token_range` |
    | `[K, K + C)`                         | class c is token K + c (only if C > 0)    | `class_token_offset`|
    | `K + C`                              | null class, for guidance (only if C > 0)  | `null_class_token`  |
    | next id                              | start token                               | `start_token`       |
    | `[start + 1, start + 1 + M)`         | condition code m is token offset + m      | `cond_token_offset` |

    `vocab_size` is `cond_token_offset + M`. A sequence reads

        [cond tokens (cond_length, if M > 0)] + [class token (if C > 0)] + [start token (if neither)] + image tokens

    so there is always at least one prefix token (`prefix_length` of them) to predict the first image token from, and
    the class token, when present, is the last prefix token. Image tokens are the `latent_height * latent_width` codes
    of the latent grid in raster order (`num_image_tokens`). Wherever class labels are accepted, label C
    (`num_classes`) stands for the null class.

    Args:
        codebook_size (`int`, defaults to 1024): K, the number of codes of the image VQGAN.
        latent_height, latent_width (`int`, default to 16): the latent grid `(h, w)` the prior generates.
        num_classes (`int`, defaults to 0): C, the number of classes; 0 for an unconditional prior.
        cond_codebook_size (`int`, defaults to 0): M, the codebook size of a conditioning VQGAN (depth, segmentation,
            ... in taming's Net2Net); 0 for none.
        cond_length (`int`, defaults to 0): the number of condition tokens; positive exactly when M is.
        vocab_size (`int`, *optional*): derived from the layout; passing the derived value is accepted so that saved
            configs load back, any other value is rejected.
        n_positions (`int`, *optional*): number of learned positions, defaults to `prefix_length + num_image_tokens`
            so a full training sequence fits. taming's `block_size` is one less (it never feeds the last token); a
            converter pads one row, which only the discarded last position reads.
        n_embd, n_layer, n_head (`int`): width, depth and heads of the GPT.
        resid_pdrop, embd_pdrop, attn_pdrop (`float`, default to 0.0): dropouts, as taming's GPT defaults.
        layer_norm_epsilon (`float`, defaults to 1e-5): as `torch.nn.LayerNorm`, which minGPT uses.
        id2label (`dict[int, str]`, *optional*): the names of the classes, one for each of `0 .. num_classes - 1`
            (transformers' field, which classifiers use the same way); `label2id` is derived from it. Without it
            the classes have no names (`class_names` is `None`) and are addressed by id only.

    The remaining GPT-2 fields keep the values that make the network minGPT: `activation_function="gelu"` (exact erf
    GELU, minGPT's `nn.GELU()`) and `tie_word_embeddings=False` (minGPT's head is its own matrix).
    """

    model_type = "vqgan_prior"

    codebook_size: int = 1024
    latent_height: int = 16
    latent_width: int = 16
    num_classes: int = 0
    cond_codebook_size: int = 0
    cond_length: int = 0
    vocab_size: int | None = None
    n_positions: int | None = None
    n_embd: int = 1024
    n_layer: int = 24
    n_head: int = 16
    activation_function: str = "gelu"
    resid_pdrop: float | int = 0.0
    embd_pdrop: float | int = 0.0
    attn_pdrop: float | int = 0.0
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = False
    # No end-of-sequence: a sample is always exactly `num_image_tokens` long.
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        for name in ("codebook_size", "latent_height", "latent_width", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        for name in ("num_classes", "cond_codebook_size", "cond_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
        if (self.cond_codebook_size > 0) != (self.cond_length > 0):
            raise ValueError(
                f"`cond_codebook_size` ({self.cond_codebook_size}) and `cond_length` ({self.cond_length}) must be "
                "both positive (a conditioning VQGAN) or both 0 (none)."
            )
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"`n_embd` ({self.n_embd}) must be divisible by `n_head` ({self.n_head}).")
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be a probability in [0, 1), got {getattr(self, name)}.")
        if not self.layer_norm_epsilon > 0:
            raise ValueError(f"`layer_norm_epsilon` must be positive, got {self.layer_norm_epsilon}.")

        derived_vocab_size = self.cond_token_offset + self.cond_codebook_size
        if self.vocab_size is None:
            self.vocab_size = derived_vocab_size
        elif self.vocab_size != derived_vocab_size:
            raise ValueError(
                f"`vocab_size` is derived from the token layout and must be {derived_vocab_size} (or left unset), "
                f"got {self.vocab_size}."
            )
        sequence_length = self.prefix_length + self.num_image_tokens
        if self.n_positions is None:
            self.n_positions = sequence_length
        elif self.n_positions < sequence_length:
            raise ValueError(
                f"`n_positions` must hold a whole sequence of prefix_length + num_image_tokens = {sequence_length} "
                f"tokens, got {self.n_positions}."
            )
        names = self._given_class_names()
        super().__post_init__(**kwargs)
        if names is not None:
            self.id2label = dict(enumerate(names))
            self.label2id = {name: index for index, name in enumerate(names)}
        self.auto_map = dict(AUTO_MAP)  # saved configs name the module file `to_json_file` writes next to them

    def _given_class_names(self) -> list[str] | None:
        """The class names `id2label` gives, checked against `num_classes`; `None` when it gives none.

        transformers fills an unset `id2label` with `{0: "LABEL_0", 1: "LABEL_1"}` (and saved configs may hold that
        default), so generic `LABEL_<id>` names count as none."""
        id2label = self.id2label
        if not id2label:
            return None
        try:
            by_id = {int(key): value for key, value in id2label.items()}
        except (TypeError, ValueError):
            raise ValueError(f"`id2label` keys must be class ids (integers), got {list(id2label)}.") from None
        if by_id == {i: f"LABEL_{i}" for i in range(len(by_id))}:
            return None  # transformers' default, not names of this prior's classes
        if sorted(by_id) != list(range(self.num_classes)):
            raise ValueError(
                f"`id2label` must name each of the {self.num_classes} classes (ids 0..{self.num_classes - 1}), "
                f"got ids {sorted(by_id)}."
            )
        names = [by_id[index] for index in range(self.num_classes)]
        if not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
            raise ValueError(f"`id2label` must hold distinct, non-empty string names, got {names}.")
        return names

    @property
    def class_names(self) -> list[str] | None:
        """The names of classes `0 .. num_classes - 1` in order, or `None` for a prior whose classes have none."""
        return [self.id2label[index] for index in range(self.num_classes)] if self._given_class_names() else None

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        """Writes the config and, next to it, the module file its `auto_map` names (see `AUTO_MAP_SOURCE`)."""
        super().to_json_file(json_file_path, use_diff=use_diff)
        module_path = os.path.join(os.path.dirname(os.fspath(json_file_path)), f"{AUTO_MAP_MODULE}.py")
        with open(module_path, "w", encoding="utf-8") as f:
            f.write(AUTO_MAP_SOURCE)

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoConfig") -> None:
        """No-op: `auto_map` already names `hf_vqgan_prior.py`; registering would copy this file's code on save."""

    @property
    def num_image_tokens(self) -> int:
        return self.latent_height * self.latent_width

    @property
    def image_token_range(self) -> tuple[int, int]:
        """`(start, end)`: image codes are the ids `start <= id < end`."""
        return 0, self.codebook_size

    @property
    def class_token_offset(self) -> int:
        return self.codebook_size

    @property
    def null_class_token(self) -> int | None:
        return self.class_token_offset + self.num_classes if self.num_classes > 0 else None

    @property
    def start_token(self) -> int:
        return self.class_token_offset + self.num_classes + (1 if self.num_classes > 0 else 0)

    @property
    def cond_token_offset(self) -> int:
        return self.start_token + 1

    @property
    def prefix_length(self) -> int:
        uses_start = self.num_classes == 0 and self.cond_codebook_size == 0
        return self.cond_length + (1 if self.num_classes > 0 else 0) + (1 if uses_start else 0)
