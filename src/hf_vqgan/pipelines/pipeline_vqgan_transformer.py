"""`VQGANTransformerPipeline`: sample code grids with the prior, decode them with the tokenizer.

    pipe = VQGANTransformerPipeline.from_pretrained("user/vqgan-digits")   # a Hub id or a folder
    images = pipe(class_labels=[3, 7], num_images_per_prompt=4, guidance_scale=2.0).images

    # Without importing hf_vqgan (it must be installed): the folder names its pipeline module, which diffusers
    # imports only when told to trust it.
    pipe = DiffusionPipeline.from_pretrained("path/to/folder", trust_remote_code=True)

Besides plain sampling it does the paper's image completion (keep the top token rows of a given image, sample the
rest), sliding-window sampling of grids larger than the prior was trained on (Esser et al. 2021, sec. 3.2), and
image-conditional sampling through a second tokenizer (`cond_vqgan`) whose inputs the `condition_processor` makes.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from typing import Any

import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from ..image_processor import VQGANImageProcessor
from ..loading import check_pipeline_folder
from ..models.prior import VQGANPriorForCausalLM
from ..models.sampling import UNSAMPLED_CODE, StaticCacheDecodeStep, check_sampling_arguments
from ..models.vqgan import VQGANModel
from .conditioning import condition_tokens_for

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
PIPELINE_MODULE = "pipeline_vqgan_transformer"
"""The module file a saved folder carries for diffusers' generic loader (`_class_name` in `model_index.json`)."""

_PIPELINE_MODULE_SOURCE = '''"""
Lets `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` find this folder's pipeline class.

It only imports the class from the installed `hf_vqgan` package (`pip install hf_vqgan`); no model code lives here.
"""

from hf_vqgan import VQGANTransformerPipeline  # noqa: F401
'''


def default_image_processor(vqgan: VQGANModel, transformer: VQGANPriorForCausalLM) -> VQGANImageProcessor:
    """The image processor of a folder saved without one: the prior's grid times the tokenizer's factor."""
    height, width = transformer.config.latent_height, transformer.config.latent_width
    resolution = height * vqgan.downsample_factor if height == width else None
    return VQGANImageProcessor(resolution=resolution, channels=vqgan.config.in_channels)


def default_condition_processor(vqgan: VQGANModel, transformer: VQGANPriorForCausalLM) -> VQGANImageProcessor | None:
    """The condition processor of a folder saved without one, from the condition attributes older prior configs
    carried (`condition_type`, `cond_num_labels`, `lowres_factor`); `None` when they name no condition type."""
    config = transformer.config
    condition_type = getattr(config, "condition_type", None)
    if condition_type is None:
        return None
    image = default_image_processor(vqgan, transformer)
    return VQGANImageProcessor(
        resolution=image.config.resolution, channels=image.config.channels, condition_type=condition_type,
        num_labels=getattr(config, "cond_num_labels", None), lowres_factor=getattr(config, "lowres_factor", 8),
    )  # fmt: skip


class VQGANTransformerPipeline(DiffusionPipeline):
    r"""
    Two-stage VQGAN generation: a GPT prior samples code indices, the VQGAN decodes them.

    Components:
        vqgan ([`VQGANModel`]): the image tokenizer.
        transformer ([`VQGANPriorForCausalLM`]): the prior over the tokenizer's codes.
        cond_vqgan ([`VQGANModel`], *optional*): the tokenizer of image-like conditions (segmentation, depth,
            edges, low-resolution images), for priors trained with them.
        image_processor ([`VQGANImageProcessor`], *optional*): images in and out; built from the tokenizer and the
            prior when not given.
        condition_processor ([`VQGANImageProcessor`], *optional*): makes `cond_vqgan`'s inputs from condition
            images; built from older prior configs' condition attributes when not given.

    Attributes:
        fast_decode_step: the decode step `sample()` runs each token with (`None`: the prior's KV-cache step);
            set by `enable_fast_decode` / `disable_fast_decode`.
    """

    model_cpu_offload_seq = "cond_vqgan->transformer->vqgan"
    _optional_components = ["cond_vqgan", "image_processor", "condition_processor"]
    _callback_tensor_inputs = ["tokens"]

    def __init__(
        self,
        vqgan: VQGANModel,
        transformer: VQGANPriorForCausalLM,
        cond_vqgan: VQGANModel | None = None,
        image_processor: VQGANImageProcessor | None = None,
        condition_processor: VQGANImageProcessor | None = None,
    ):
        super().__init__()
        if image_processor is None:
            image_processor = default_image_processor(vqgan, transformer)
        if condition_processor is None and cond_vqgan is not None:
            condition_processor = default_condition_processor(vqgan, transformer)
        self.register_modules(
            vqgan=vqgan, transformer=transformer, cond_vqgan=cond_vqgan, image_processor=image_processor,
            condition_processor=condition_processor,
        )  # fmt: skip
        self.fast_decode_step = None
        self._interrupt = False

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a local folder or a Hub repo id.

        diffusers refuses components from third-party libraries when handed a repo id (diffusers issue 6563), so a
        repo id is first downloaded (or found in the local Hugging Face cache) with `snapshot_download`, and the
        resulting folder is loaded like any local one. No code from the folder runs (see `load_config`).
        """
        path = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(path) and (os.path.isabs(path) or path.startswith((".", "~")) or os.path.exists(path)):
            raise FileNotFoundError(
                f"No pipeline folder at {path!r}: expected a directory holding model_index.json, or a Hub repo id "
                "such as 'user/vqgan-digits'."
            )
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download
            from huggingface_hub.errors import LocalEntryNotFoundError

            download_keys = ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")
            download_kwargs = {k: kwargs.pop(k) for k in download_keys if k in kwargs}
            allow = ["*.json", "*.safetensors", "*.md", "*.txt", f"{PIPELINE_MODULE}.py"]
            try:
                path = snapshot_download(path, allow_patterns=allow, **download_kwargs)
            except LocalEntryNotFoundError as error:  # offline, or no network: the cache has no copy
                raise LocalEntryNotFoundError(  # the same type (a FileNotFoundError), a message that says what to do
                    f"{path!r} is not a folder here, and as a Hub repo id it is not in the local Hugging Face cache "
                    "(the Hub cannot be reached, or HF_HUB_OFFLINE=1): pass a pipeline folder, or download the repo "
                    "once with network access."
                ) from error
        check_pipeline_folder(path)  # a missing component folder is named (diffusers would load the root instead)
        return super().from_pretrained(path, **kwargs)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """diffusers' `load_config`, reading a folder's `["pipeline_vqgan_transformer", "VQGANTransformerPipeline"]`
        `_class_name` as this class: loading through this class needs no code from the folder, only the generic
        `DiffusionPipeline.from_pretrained` does."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if cls is not DiffusionPipeline and isinstance(config.get("_class_name"), (list, tuple)):
            config["_class_name"] = config["_class_name"][1]
        return loaded

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """diffusers' `save_pretrained`, plus the module file and `_class_name` the generic loader needs."""
        super().save_pretrained(save_directory, **kwargs)
        with open(os.path.join(save_directory, f"{PIPELINE_MODULE}.py"), "w", encoding="utf-8") as f:
            f.write(_PIPELINE_MODULE_SOURCE)
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        index["_class_name"] = [PIPELINE_MODULE, type(self).__name__]
        with open(index_path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")

    # -------------------------------------------------------------------------------------- token helpers
    @property
    def latent_grid(self) -> tuple[int, int]:
        return self.transformer.config.latent_height, self.transformer.config.latent_width

    @torch.no_grad()
    def encode_images(self, images) -> torch.LongTensor:
        """Images (PIL, arrays, or tensors in [-1, 1] of shape `(batch, channels, height, width)`) at the size they
        are given to indices of shape `(batch, h, w)`."""
        pixels = self.image_processor.preprocess(images, resize=False)
        return self.vqgan.tokenize(pixels.to(self.vqgan.device, self.vqgan.dtype))

    @torch.no_grad()
    def decode_tokens(self, indices: torch.LongTensor, output_type: str = "pil"):
        """Indices of shape `(batch, h, w)` to images (`"pil"`, `"np"` in [0, 1] NHWC, or `"pt"` in [0, 1] NCHW)."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(
                f"`output_type` must be one of 'pil', 'np', 'pt' for decoded images, got {output_type!r}."
            )
        if not isinstance(indices, torch.Tensor):
            raise TypeError(f"`indices` must be a torch.Tensor, got {type(indices).__name__}.")
        pixels = self.vqgan.decode_indices(indices.to(self.vqgan.device)).sample
        return self.image_processor.postprocess(pixels, output_type)

    # --------------------------------------------------------------------------------------------- classes
    @property
    def labels(self) -> dict[str, int]:
        """Class names to class ids (`{"circle": 0, "square": 1}`), sorted by name as in diffusers' DiT pipeline;
        empty when the prior's classes have no names (its config's `id2label`)."""
        names = self.transformer.config.class_names or []
        return dict(sorted((name, index) for index, name in enumerate(names)))

    def get_label_ids(self, label: str | int | list[str | int]) -> list[int]:
        """The class ids of `label`: a class name or a list of names (ids pass through unchanged).

        Raises a `ValueError` listing the known names for a name this prior does not have.
        """
        labels = label if isinstance(label, (list, tuple)) else [label]
        known = self.labels
        ids = []
        for item in labels:
            if isinstance(item, str):
                if item not in known:
                    listed = f"the known ones are {sorted(known)}" if known else "this prior's classes have no names"
                    raise ValueError(
                        f"Unknown class name {item!r}: {listed} (or pass class ids in [0, "
                        f"{self.transformer.config.num_classes}))."
                    )
                ids.append(known[item])
            else:
                ids.append(item)
        return ids

    # ----------------------------------------------------------------------------------------- conditions
    def _condition_tokens(
        self, condition_image=None, batch_size: int = 1, condition_tokens=None
    ) -> torch.LongTensor | None:
        """The prior's condition tokens `(batch_size, cond_length)`, or `None` (see `pipelines.conditioning`)."""
        return condition_tokens_for(self, condition_image, condition_tokens, batch_size)

    def prepare_condition(self, condition_image) -> torch.Tensor:
        """`condition_processor.preprocess_condition` (see there), checked against the condition tokenizer.

        Returns a tensor of shape `(batch, channels, height, width)` in [-1, 1].
        """
        if self.condition_processor is None:
            raise ValueError(
                "This pipeline has a condition tokenizer but no `condition_processor` saying how to make its inputs; "
                "add one: `pipe.register_modules(condition_processor=VQGANImageProcessor(condition_type=...))`."
            )
        condition = self.condition_processor.preprocess_condition(condition_image)
        expected = self.cond_vqgan.config.in_channels
        if condition.shape[1] != expected:
            raise ValueError(
                f"The condition has {condition.shape[1]} channels, the condition tokenizer expects {expected}."
            )
        return condition.float()

    # ---------------------------------------------------------------------------------------------- sharing
    def model_card(self, repo_id: str = "path/to/this/folder", metrics: dict | None = None, **fields):
        """A model card rendered from `model_cards/pipeline.md`."""
        from .sharing import pipeline_model_card

        return pipeline_model_card(self, repo_id=repo_id, metrics=metrics, **fields)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str = "Upload VQGANTransformerPipeline",
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        revision: str | None = None,
        variant: str | None = None,
        model_card=None,
        sample_grid: PIL.Image.Image | None = None,
        **card_fields,
    ) -> str:
        """Upload the pipeline folder (components as safetensors, `model_index.json`) with a model card.

        Exactly what `save_pretrained` writes is uploaded, with the card and the images it shows: nothing else of
        the folder the pipeline was loaded from. The card is `model_card` if given, else the `README.md` of that
        folder (with the images it links), else one rendered from `model_cards/pipeline.md` (`card_fields` go into
        it; an unknown field is a `TypeError`). `sample_grid`, if given, is uploaded as `samples.png`.

        Args:
            repo_id: the Hub repository, created if needed (`private`: whether a new one is private; `None`, the
                account's default).
            commit_message, token: of the commit.
            create_pr: open a pull request instead of committing.
            revision: the branch to commit to (created from the default branch if missing); not with `create_pr`.
            variant: saved weights are named `*.{variant}.safetensors` (e.g. `"fp16"`), as `save_pretrained` does.

        Returns:
            The URL of the commit or pull request.
        """
        from .sharing import push_pipeline_to_hub

        return push_pipeline_to_hub(
            self, repo_id, commit_message=commit_message, private=private, token=token, create_pr=create_pr,
            revision=revision, variant=variant, model_card=model_card, sample_grid=sample_grid, **card_fields,
        )  # fmt: skip

    # --------------------------------------------------------------------------------------------- sampling
    def enable_fast_decode(self, mode: str = "auto") -> None:
        """
        Sample with a static KV cache and a decode step captured whole, sampling included, replayed as a CUDA graph
        ([`~models.sampling.StaticCacheDecodeStep`]): on a GPU a large factor faster than `generate()`, with the
        same tokens from the same generator (up to the rounding of fused kernels). The first call for each batch
        size and sampling setting compiles or captures its step; later calls reuse it. Move the pipeline to its
        device and dtype first (model CPU offload is not supported with it). Sets `fast_decode_step`.

        Args:
            mode (`str`, defaults to `"auto"`): `"compile"` (torch.compile with CUDA graphs), `"cuda_graph"` (plain
                capture, no compile time), `"eager"`, or `"auto"` (`"compile"` on CUDA, `"eager"` elsewhere).
        """
        self.fast_decode_step = StaticCacheDecodeStep(mode=mode)

    def disable_fast_decode(self) -> None:
        """Go back to the prior's default KV-cache step (`fast_decode_step = None`)."""
        self.fast_decode_step = None

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` from `callback_on_step_end` to stop sampling after the current token."""
        return self._interrupt

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
        batch_size: int = 1,
        num_images_per_prompt: int = 1,
        condition_image=None,
        condition_tokens: torch.LongTensor | None = None,
        image=None,
        keep_rows: int | None = None,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance_scale: float = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        callback: Callable[[int, torch.LongTensor], None] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Sample images.

        Args:
            class_labels: the classes of a class-conditional prior: ids or names (`"circle"`, `["circle", 3]`, see
                `labels` and `get_label_ids`), or a tensor of ids; `None` for an unconditional prior.
            batch_size: how many images an unconditional prior samples (times `num_images_per_prompt`).
            num_images_per_prompt: images per class label (or per condition image).
            condition_image: the condition of an image-conditional prior: a PIL image, an array or a tensor (a label
                map for segmentation), made into the condition tokenizer's input by `condition_processor`; for a
                `"coordinates"` processor (converted taming `CoordStage`), a map in [0, 1] of shape
                `(batch, 1, height, width)` (`hf_vqgan.conditions.coordinate_map`), tokenized by the processor.
            condition_tokens (`torch.LongTensor` of shape `(batch, cond_length)`): the condition tokens as they are,
                in `[0, cond_codebook_size)`, instead of `condition_image`: for priors that read precomputed
                sequences (converted taming `DummyCondStage` scene layouts), or to reuse tokens of a condition.
            image, keep_rows: image completion: `image` is tokenised, its top `keep_rows` token rows are kept
                exactly and the rest is sampled.
            height, width: output size in pixels. Beyond the prior's training grid, tokens are sampled with a
                sliding window of the trained size around each position.
            generator: a `torch.Generator` for reproducible samples.
            temperature, top_k, top_p: sampling controls.
            guidance_scale: classifier-free guidance weight (needs a prior trained with a null class).
            output_type: `"pil"`, `"np"`, `"pt"`, or `"latent"` (the token grid, `(batch, h, w)`).
            return_dict: return an `ImagePipelineOutput` rather than a tuple.
            callback_on_step_end: called after each sampled token as `callback_on_step_end(pipe, step, timestep,
                callback_kwargs)`, with `timestep` the raster position of the token and `callback_kwargs` holding
                the tensors named in `callback_on_step_end_tensor_inputs` (`"tokens"`: the image codes so far, of
                shape `(batch, k + step + 1)`). It returns a dict; a `"tokens"` entry replaces the codes sampled so
                far. Setting `pipe._interrupt = True` stops sampling: unsampled positions hold `UNSAMPLED_CODE` (-1)
                in `"latent"` output and decode as code 0.
            callback_on_step_end_tensor_inputs: see above; defaults to `["tokens"]`.
            callback: deprecated, `callback(step, tokens)`; use `callback_on_step_end`.

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the images.
        """
        tensor_inputs = self.check_inputs(
            output_type, batch_size, num_images_per_prompt, temperature, top_k, top_p, generator, guidance_scale,
            callback_on_step_end, callback_on_step_end_tensor_inputs, callback,
        )  # fmt: skip
        labels, n = self._prepare_labels(class_labels, batch_size, num_images_per_prompt)
        cond_tokens = self._condition_tokens(condition_image, n, condition_tokens)
        grid = self._output_grid(height, width)
        prefix = self._completion_prefix(image, keep_rows, n, grid)
        self._interrupt = False
        total = grid[0] * grid[1] - (0 if prefix is None else prefix.shape[1])
        with self.progress_bar(total=total) as bar:
            on_token = self._token_callback(bar, callback_on_step_end, tensor_inputs, callback)
            tokens = self._sample_codes(
                labels, cond_tokens, n, prefix, grid, guidance_scale, temperature, top_k, top_p, generator, on_token
            )
        tokens = tokens.reshape(n, *grid)  # (B, h, w)
        if output_type == "latent":
            images = tokens
        else:  # an interrupted run decodes its unsampled positions as code 0
            images = self.decode_tokens(tokens.masked_fill(tokens == UNSAMPLED_CODE, 0), output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    # ------------------------------------------------------------------------------------------ __call__ steps
    def check_inputs(
        self, output_type, batch_size, num_images_per_prompt, temperature, top_k, top_p, generator, guidance_scale,
        callback_on_step_end, callback_on_step_end_tensor_inputs, callback,
    ) -> list[str]:  # fmt: skip
        """Validate the sampling arguments once, before anything runs; returns the callback's tensor inputs."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a positive int, got {num_images_per_prompt!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        check_sampling_arguments(temperature, top_k, top_p)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
        if guidance_scale != 1.0 and not self.transformer.config.num_classes:
            raise ValueError(
                f"`guidance_scale`={guidance_scale} needs a class-conditional prior with a null class; this one has "
                "none (use guidance_scale=1.0)."
            )
        tensor_inputs = list(callback_on_step_end_tensor_inputs or self._callback_tensor_inputs)
        unknown = [name for name in tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has {unknown}; the pipeline offers "
                f"{self._callback_tensor_inputs}."
            )
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError(f"`callback_on_step_end` must be callable, got {type(callback_on_step_end).__name__}.")
        if callback is not None:
            warnings.warn(
                "`callback(step, tokens)` is deprecated; use `callback_on_step_end(pipe, step, timestep, "
                "callback_kwargs)`.",
                FutureWarning,
                stacklevel=3,
            )
        return tensor_inputs

    def _prepare_labels(self, class_labels, batch_size: int, num_images_per_prompt: int):
        """Class labels (ids or names) as ids repeated per prompt, on the execution device, and the number of images
        to sample."""
        num_classes = self.transformer.config.num_classes
        if class_labels is None:
            if num_classes:
                raise ValueError(f"This prior is class-conditional ({num_classes} classes): pass `class_labels`.")
            return None, batch_size * num_images_per_prompt
        if not num_classes:
            shown = class_labels.tolist() if isinstance(class_labels, torch.Tensor) else class_labels
            raise ValueError(f"`class_labels`={shown!r} given, but this prior is unconditional.")
        if isinstance(class_labels, str) or (
            isinstance(class_labels, (list, tuple)) and any(isinstance(label, str) for label in class_labels)
        ):
            class_labels = self.get_label_ids(class_labels)
        labels = torch.as_tensor(class_labels).reshape(-1)
        # A cast to long would silently truncate 2.7 to class 2.
        if labels.numel() and (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool):
            raise TypeError(f"`class_labels` must be integers, got {labels.tolist()} ({labels.dtype}).")
        labels = labels.long()
        if labels.numel() == 0 or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"`class_labels` must lie in [0, {num_classes}), got {labels.tolist()}.")
        labels = labels.repeat_interleave(num_images_per_prompt).to(self._execution_device)
        return labels, labels.shape[0]

    def _output_grid(self, height: int | None, width: int | None) -> tuple[int, int]:
        """The token grid of the output (the prior checks that a larger one fits its sliding window)."""
        factor = self.vqgan.downsample_factor
        grid_h, grid_w = self.latent_grid
        out_h = grid_h if height is None else self._grid_size(height, factor, "height")
        out_w = grid_w if width is None else self._grid_size(width, factor, "width")
        return out_h, out_w

    @staticmethod
    def _grid_size(pixels: int, factor: int, name: str) -> int:
        if not isinstance(pixels, int) or pixels < factor or pixels % factor:
            raise ValueError(
                f"`{name}` must be a positive multiple of the tokenizer's factor {factor}, got {pixels!r}."
            )
        return pixels // factor

    def _completion_prefix(self, image, keep_rows: int | None, n: int, grid: tuple[int, int]):
        """The codes of the top `keep_rows` token rows of `image`, `(n, keep_rows * w)`, or `None`."""
        if image is None and keep_rows is None:
            return None
        if image is None or keep_rows is None:
            raise ValueError("Image completion needs both `image` and `keep_rows`.")
        h, w = grid
        pixels = self.image_processor.preprocess(image, resize=False)
        f = self.vqgan.downsample_factor
        if tuple(pixels.shape[-2:]) != (h * f, w * f):
            raise ValueError(
                f"The completion `image` must be {h * f}x{w * f} pixels (the output size), got "
                f"{pixels.shape[-2]}x{pixels.shape[-1]}."
            )
        if not isinstance(keep_rows, int) or not 0 <= keep_rows <= h:
            raise ValueError(f"`keep_rows` must be an int in [0, {h}] (token rows), got {keep_rows!r}.")
        if pixels.shape[0] not in (1, n):
            raise ValueError(f"Got {pixels.shape[0]} completion images for a batch of {n}.")
        indices = self.vqgan.tokenize(pixels.to(self.vqgan.device, self.vqgan.dtype))  # (B, h, w)
        prefix = indices[:, :keep_rows].reshape(indices.shape[0], -1)
        return prefix.expand(n, -1) if prefix.shape[0] == 1 else prefix

    def _token_callback(self, bar, callback_on_step_end, tensor_inputs: list[str], callback):
        """The per-token hook handed to the sampling loop: `(step, tokens) -> tokens or None`."""

        def on_token(step: int, tokens: torch.LongTensor) -> torch.LongTensor | None:
            bar.update(1)
            if callback is not None:
                callback(step, tokens)
            if callback_on_step_end is None:
                return None
            timestep = tokens.shape[1] - 1  # the raster position of the token just sampled
            outputs = callback_on_step_end(self, step, timestep, {name: tokens for name in tensor_inputs}) or {}
            return outputs.get("tokens")

        return on_token

    def _sample_codes(self, labels, cond_tokens, n, prefix, grid, guidance_scale, temperature, top_k, top_p,
                      generator, on_token) -> torch.LongTensor:  # fmt: skip
        """The prior's one sampling loop: `(n, h, w)` codes, a sliding window of the trained size on larger grids.

        `fast_decode_step` (static cache) runs the trained grid; a larger grid keeps the prior's sliding window.
        """
        decode_step = self.fast_decode_step if grid == self.latent_grid else None
        return self.transformer.sample(
            class_labels=labels, cond_indices=cond_tokens, batch_size=n, prefix_indices=prefix,
            guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
            grid=grid, decode_step=decode_step, callback=on_token, interrupt=lambda: self._interrupt,
        )  # fmt: skip
