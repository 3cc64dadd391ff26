"""`VQGANTransformerPipeline`: sample code grids with the prior, decode them with the tokenizer.

    pipe = VQGANTransformerPipeline.from_pretrained("user/vqgan-digits")   # a Hub id or a folder
    images = pipe(class_labels=[3, 7], num_images_per_prompt=4, guidance_scale=2.0).images

Besides plain sampling it does the paper's image completion (keep the top token rows of a given image, sample the
rest), sliding-window sampling of grids larger than the prior was trained on (Esser et al. 2021, sec. 3.2), and
image-conditional sampling through a second tokenizer (`cond_vqgan`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from ..models.prior import VQGANPriorForCausalLM, _check_sampling_arguments, sample_next_token
from ..models.vqgan import VQGANModel

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def pil_or_array_to_tensor(image, channels: int, name: str = "image") -> torch.Tensor:
    """PIL images, uint8/float arrays or tensors to a float tensor `(B, C, H, W)` in [-1, 1]."""
    if isinstance(image, PIL.Image.Image):
        image = [image]
    if isinstance(image, list) and image and isinstance(image[0], PIL.Image.Image):
        mode = "L" if channels == 1 else "RGB"
        arrays = [np.asarray(im.convert(mode), dtype=np.float32) / 127.5 - 1.0 for im in image]
        sizes = {a.shape for a in arrays}
        if len(sizes) != 1:
            raise ValueError(f"All `{name}` images must have the same size, got {sorted(sizes)}.")
        tensor = torch.from_numpy(np.stack(arrays))
        return tensor[:, None] if channels == 1 else tensor.permute(0, 3, 1, 2)
    if isinstance(image, np.ndarray):
        tensor = torch.from_numpy(image)
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim == 4 and tensor.shape[-1] in (1, 3) and tensor.shape[1] not in (1, 3):
            tensor = tensor.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        image = tensor.float() / 127.5 - 1.0 if image.dtype == np.uint8 else tensor.float()
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"`{name}` must be a PIL image, a list of them, a numpy array or a tensor; got {type(image).__name__}."
        )
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[1] != channels:
        raise ValueError(f"`{name}` must have shape (batch, {channels}, height, width), got {tuple(image.shape)}.")
    return image.float()


class VQGANTransformerPipeline(DiffusionPipeline):
    r"""
    Two-stage VQGAN generation: a GPT prior samples code indices, the VQGAN decodes them.

    Components:
        vqgan ([`VQGANModel`]): the image tokenizer.
        transformer ([`VQGANPriorForCausalLM`]): the prior over the tokenizer's codes.
        cond_vqgan ([`VQGANModel`], *optional*): the tokenizer of image-like conditions (segmentation, depth,
            edges, low-resolution images), for priors trained with them.
    """

    model_cpu_offload_seq = "cond_vqgan->transformer->vqgan"
    _optional_components = ["cond_vqgan"]

    def __init__(self, vqgan: VQGANModel, transformer: VQGANPriorForCausalLM, cond_vqgan: VQGANModel | None = None):
        super().__init__()
        self.register_modules(vqgan=vqgan, transformer=transformer, cond_vqgan=cond_vqgan)

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a local folder or a Hub repo id.

        diffusers refuses components from third-party libraries when handed a repo id (diffusers issue 6563), so a
        repo id is first downloaded (or found in the local Hugging Face cache) with `snapshot_download`, and the
        resulting folder is loaded like any local one.
        """
        path = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(path) and (os.path.isabs(path) or path.startswith((".", "~")) or os.path.exists(path)):
            raise FileNotFoundError(
                f"No pipeline folder at {path!r}: expected a directory holding model_index.json, or a Hub repo id "
                "such as 'user/vqgan-digits'."
            )
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download

            download_keys = ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")
            download_kwargs = {k: kwargs.pop(k) for k in download_keys if k in kwargs}
            path = snapshot_download(
                path, allow_patterns=["*.json", "*.safetensors", "*.md", "*.txt"], **download_kwargs
            )
        return super().from_pretrained(path, **kwargs)

    # -------------------------------------------------------------------------------------- token helpers
    @property
    def latent_grid(self) -> tuple[int, int]:
        return self.transformer.config.latent_height, self.transformer.config.latent_width

    @torch.no_grad()
    def encode_images(self, images) -> torch.LongTensor:
        """Images (PIL, arrays, or tensors in [-1, 1] of shape `(batch, channels, height, width)`) to indices of
        shape `(batch, h, w)`."""
        pixels = pil_or_array_to_tensor(images, self.vqgan.config.in_channels)
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
        images = (pixels.float() / 2 + 0.5).clamp(0, 1)  # (B, C, H, W) in [0, 1]
        if output_type == "pt":
            return images.cpu()
        array = images.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
        if output_type == "np":
            return array
        uint8 = (array * 255).round().astype(np.uint8)
        return [PIL.Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in uint8]

    # ----------------------------------------------------------------------------------------- conditions
    def _condition_tokens(self, condition_image, batch_size: int) -> torch.LongTensor | None:
        config = self.transformer.config
        condition_type = getattr(config, "condition_type", None)
        if condition_image is None:
            if self.cond_vqgan is not None or config.cond_length:
                raise ValueError(
                    f"This pipeline was trained with `{condition_type}` conditions: pass `condition_image`."
                )
            return None
        if self.cond_vqgan is None or not config.cond_length:
            raise ValueError(
                "`condition_image` was given, but this pipeline has no condition tokenizer (`cond_vqgan`)."
            )
        condition = self.prepare_condition(condition_image)  # (B, C, H, W)
        count = condition.shape[0]
        if batch_size % count:
            raise ValueError(
                f"Got {count} condition images for a batch of {batch_size} images: give one condition for all, or "
                f"one per prompt (`batch_size={count}`, or one class label per condition), each of which then gives "
                "`num_images_per_prompt` images."
            )
        tokens = self.cond_vqgan.tokenize(condition.to(self.cond_vqgan.device, self.cond_vqgan.dtype)).flatten(1)
        # Consecutive images share a condition, as they share a class label (`repeat_interleave` there too).
        return tokens.repeat_interleave(batch_size // count, dim=0)  # (batch_size, cond_length)

    def prepare_condition(self, condition_image) -> torch.Tensor:
        """Check and preprocess a condition for `cond_vqgan`, exactly as the training data pipeline does.

        - `segmentation`: a label map (a palette or grayscale PIL image, or an integer array/tensor of shape
          `(H, W)` or `(batch, H, W)`) with labels in `[0, num_labels)`, at the output resolution.
        - `depth`: a float map (PIL, array or tensor of shape `(H, W)`, `(batch, H, W)` or `(batch, 1, H, W)`).
        - `edges`, `lowres`: the image to derive the condition from, at the output resolution (for `lowres`, an
          already downsampled image of `resolution / lowres_factor` pixels is taken as is).

        Returns a tensor of shape `(batch, channels, height, width)` in [-1, 1].
        """
        from ..training import conditions

        config = self.transformer.config
        condition_type = config.condition_type
        transform = conditions.ConditionTransform(
            condition_type, num_labels=config.cond_num_labels, lowres_factor=config.lowres_factor
        )
        resolution = self.latent_grid[0] * self.vqgan.downsample_factor
        if transform.derived:
            channels = self.vqgan.config.in_channels
            if isinstance(condition_image, PIL.Image.Image):
                condition_image = [condition_image]
            if isinstance(condition_image, list) and all(isinstance(im, PIL.Image.Image) for im in condition_image):
                # The training transform's mode conversion (16-bit rescaling, transparency on white): same pixels.
                from ..training.data import convert_image_mode

                condition_image = [convert_image_mode(im, channels) for im in condition_image]
            pixels = pil_or_array_to_tensor(condition_image, channels, "condition_image")
            if pixels.numel() and (pixels.min() < -1.001 or pixels.max() > 1.001):
                raise ValueError(
                    "A float `condition_image` must hold pixels in [-1, 1] (pass uint8 arrays or PIL images for 0..255), "
                    f"got values in [{float(pixels.min()):.3g}, {float(pixels.max()):.3g}]."
                )
            size = tuple(pixels.shape[-2:])
            low = resolution // config.lowres_factor
            if condition_type == "lowres" and size == (low, low):
                condition = pixels
            elif size != (resolution, resolution):
                expected = f"{resolution}x{resolution}" + (f" (or {low}x{low})" if condition_type == "lowres" else "")
                raise ValueError(f"`condition_image` must be {expected} pixels, got {size[0]}x{size[1]}.")
            else:
                condition = transform.derive(pixels)
        else:
            if isinstance(condition_image, PIL.Image.Image):
                reader = conditions.read_label_map if condition_type == "segmentation" else conditions.read_depth_map
                condition_image = reader(condition_image)
            maps = torch.as_tensor(
                np.asarray(condition_image) if not isinstance(condition_image, torch.Tensor) else condition_image
            )
            if maps.ndim == 4 and maps.shape[1] == 1:
                maps = maps[:, 0]
            if maps.ndim == 2:
                maps = maps[None]
            if maps.ndim != 3 or tuple(maps.shape[-2:]) != (resolution, resolution):
                raise ValueError(
                    f"A {condition_type} `condition_image` must be a map of shape ({resolution}, {resolution}) or "
                    f"(batch, {resolution}, {resolution}), got {tuple(maps.shape)}."
                )
            if condition_type == "segmentation":
                if maps.is_floating_point() and not torch.equal(maps, maps.round()):
                    raise ValueError(
                        "A segmentation `condition_image` must hold integer labels, got fractional values."
                    )
                conditions.check_labels(maps.long(), config.cond_num_labels)
                condition = conditions.one_hot_labels(maps.long(), config.cond_num_labels)  # (B, num_labels, H, W)
            else:
                condition = torch.stack([conditions.normalize_depth(m.float()) for m in maps])[:, None]
        expected = self.cond_vqgan.config.in_channels
        if condition.shape[1] != expected:
            raise ValueError(
                f"The condition has {condition.shape[1]} channels, the condition tokenizer expects {expected}."
            )
        return condition.float()

    # ---------------------------------------------------------------------------------------------- sharing
    def model_card(self, repo_id: str = "path/to/this/folder", metrics: dict | None = None, **fields):
        """A model card rendered from `model_cards/pipeline.md`."""
        from ..hub import render_model_card

        config = self.transformer.config
        f = self.vqgan.downsample_factor
        if config.num_classes:
            call = "images = pipe(class_labels=[3, 7], num_images_per_prompt=4, guidance_scale=2.0,\n" \
                   "              generator=torch.Generator().manual_seed(0)).images"  # fmt: skip
        elif config.cond_length:
            call = f"images = pipe(condition_image=condition, generator=torch.Generator().manual_seed(0)).images  # a {config.condition_type} condition"
        else:
            call = "images = pipe(batch_size=4, generator=torch.Generator().manual_seed(0)).images"
        prior = (
            f"A GPT with {config.n_layer} layers, width {config.n_embd} and {config.n_head} heads "
            f"({self.transformer.num_parameters():,} parameters) over {config.codebook_size} image codes"
            + (
                f", {config.num_classes} classes and a null class for classifier-free guidance"
                if config.num_classes
                else ""
            )
            + (f", and {config.cond_length} `{config.condition_type}` condition tokens" if config.cond_length else "")
            + ". "
            + fields.pop("training_description", "")
        )
        defaults = dict(
            model_name=fields.pop("model_name", repo_id.rstrip("/").split("/")[-1]),
            latent_height=config.latent_height, latent_width=config.latent_width, resolution=config.latent_height * f,
            has_condition=bool(config.cond_length), condition_type=config.condition_type, usage_call=call,
            prior_description=prior, dataset_description=fields.pop("dataset_description", "Not recorded."),
        )  # fmt: skip
        tags = ["image-generation", "autoregressive"] + (["class-conditional"] if config.num_classes else [])
        return render_model_card("pipeline", repo_id=repo_id, metrics=metrics, tags=tags,
                                 pipeline_tag="unconditional-image-generation" if not config.num_classes else None,
                                 **defaults, **fields)  # fmt: skip

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload VQGANTransformerPipeline",
                    private: bool = False, token: str | None = None, model_card=None,
                    sample_grid: PIL.Image.Image | None = None, **card_fields) -> str:  # fmt: skip
        """Upload the pipeline folder (components as safetensors, `model_index.json`) with a model card.

        The card is `model_card` if given, else the `README.md` of the folder this pipeline was loaded from, else
        one rendered from `model_cards/pipeline.md` (`card_fields` go into it). Images of that folder (its sample
        grid) are uploaded with it; `sample_grid`, if given, is uploaded as `samples.png` and shown in a rendered card.
        """
        import shutil
        import tempfile

        from ..hub import push_folder_to_hub

        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            source = getattr(self.config, "_name_or_path", None)
            source = source if source and os.path.isdir(source) else None
            # A card copied from the source folder links to that folder's sample grid: the image must go along.
            for name in os.listdir(source) if source else []:
                if name.lower().endswith((".png", ".jpg", ".jpeg")):
                    shutil.copy(os.path.join(source, name), os.path.join(folder, name))
            if sample_grid is not None:
                sample_grid.save(os.path.join(folder, "samples.png"))
            if model_card is not None:
                card_text = str(model_card)
            elif source and os.path.isfile(os.path.join(source, "README.md")):
                with open(os.path.join(source, "README.md"), encoding="utf-8") as f:
                    card_text = f.read()
            else:
                if os.path.isfile(os.path.join(folder, "samples.png")):
                    card_fields.setdefault("grid_file", "samples.png")
                card_text = str(self.model_card(repo_id=repo_id, **card_fields))
            with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
                f.write(card_text)
            return push_folder_to_hub(folder, repo_id, private=private, token=token, commit_message=commit_message)

    # --------------------------------------------------------------------------------------------- sampling
    def enable_fast_decode(self, mode: str = "auto") -> None:
        """
        Sample with a static KV cache and a decode step captured whole, sampling included, replayed as a CUDA graph
        ([`~models.fast_sampling.FastImageSampler`]): on a GPU a large factor faster than `generate()`, with the
        same tokens from the same generator (up to the rounding of fused kernels). The first call for each batch
        size and sampling setting compiles or captures its step; later calls reuse it. Move the pipeline to its
        device and dtype first (model CPU offload is not supported with it). Sliding-window sampling (`height` /
        `width` beyond the trained grid) keeps the plain path.

        Args:
            mode (`str`, defaults to `"auto"`): `"compile"` (torch.compile with CUDA graphs), `"cuda_graph"` (plain
                capture, no compile time), `"eager"`, or `"auto"` (`"compile"` on CUDA, `"eager"` elsewhere).
        """
        from ..models.fast_sampling import FastImageSampler

        self._fast_sampler = FastImageSampler(self.transformer, mode=mode)

    def disable_fast_decode(self) -> None:
        """Go back to `VQGANPriorForCausalLM.sample()` (transformers' `generate()`)."""
        self._fast_sampler = None

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor | None = None,
        batch_size: int = 1,
        num_images_per_prompt: int = 1,
        condition_image=None,
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
        callback: Callable[[int, torch.LongTensor], None] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Sample images.

        Args:
            class_labels: class ids for a class-conditional prior (an int, a list, or a tensor); `None` for an
                unconditional one.
            batch_size: how many images an unconditional prior samples (times `num_images_per_prompt`).
            num_images_per_prompt: images per class label (or per condition image).
            condition_image: the condition of an image-conditional prior: a PIL image, an array or a tensor (a label
                map for segmentation).
            image, keep_rows: image completion: `image` is tokenised, its top `keep_rows` token rows are kept
                exactly and the rest is sampled.
            height, width: output size in pixels. Beyond the prior's training grid, tokens are sampled with a
                sliding window of the trained size around each position.
            generator: a `torch.Generator` for reproducible samples.
            temperature, top_k, top_p: sampling controls.
            guidance_scale: classifier-free guidance weight (needs a prior trained with a null class).
            output_type: `"pil"`, `"np"`, `"pt"`, or `"latent"` (the token grid, `(batch, h, w)`).
            return_dict: return an `ImagePipelineOutput` rather than a tuple.
            callback: called as `callback(step, tokens)` after each sampled token.

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the images.
        """
        config = self.transformer.config
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a positive int, got {num_images_per_prompt!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        _check_sampling_arguments(temperature, top_k, top_p)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
        if guidance_scale != 1.0 and not config.num_classes:
            raise ValueError(
                f"`guidance_scale`={guidance_scale} needs a class-conditional prior with a null class; this one has none "
                f"(use guidance_scale=1.0)."
            )
        device = self._execution_device

        if class_labels is not None:
            labels = torch.as_tensor(class_labels).reshape(-1)
            # A cast to long would silently truncate 2.7 to class 2.
            if labels.numel() and (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool):
                raise TypeError(f"`class_labels` must be integers, got {labels.tolist()} ({labels.dtype}).")
            labels = labels.long()
            if not config.num_classes:
                raise ValueError(f"`class_labels`={labels.tolist()} given, but this prior is unconditional.")
            if labels.numel() == 0 or labels.min() < 0 or labels.max() >= config.num_classes:
                raise ValueError(f"`class_labels` must lie in [0, {config.num_classes}), got {labels.tolist()}.")
            labels = labels.repeat_interleave(num_images_per_prompt).to(device)
            n = labels.shape[0]
        else:
            if config.num_classes:
                raise ValueError(
                    f"This prior is class-conditional ({config.num_classes} classes): pass `class_labels`."
                )
            labels, n = None, batch_size * num_images_per_prompt
        cond_tokens = self._condition_tokens(condition_image, n)

        f = self.vqgan.downsample_factor
        grid_h, grid_w = self.latent_grid
        out_h = grid_h if height is None else self._grid_size(height, f, "height")
        out_w = grid_w if width is None else self._grid_size(width, f, "width")

        prefix = None
        if image is not None or keep_rows is not None:
            if image is None or keep_rows is None:
                raise ValueError("Image completion needs both `image` and `keep_rows`.")
            prefix = self._completion_prefix(image, keep_rows, n, (out_h, out_w))

        total = out_h * out_w - (0 if prefix is None else prefix.shape[1])
        with self.progress_bar(total=total) as bar:

            def on_token(step: int, tokens: torch.LongTensor) -> None:
                bar.update(1)
                if callback is not None:
                    callback(step, tokens)

            if (out_h, out_w) == (grid_h, grid_w):
                # enable_fast_decode() swaps in the captured decode step; same arguments, same tokens.
                sampler = getattr(self, "_fast_sampler", None) or self.transformer
                tokens = sampler.sample(
                    class_labels=labels, cond_indices=cond_tokens, batch_size=n, prefix_indices=prefix,
                    guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, top_p=top_p,
                    generator=generator, callback=on_token,
                )  # fmt: skip
            else:
                tokens = self._sample_sliding_window(
                    labels, cond_tokens, n, prefix, (out_h, out_w), guidance_scale, temperature, top_k, top_p,
                    generator, on_token,
                )  # fmt: skip
        tokens = tokens.reshape(n, out_h, out_w)  # (B, h, w)

        if output_type == "latent":
            images = tokens
        else:
            images = self.decode_tokens(tokens, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    @staticmethod
    def _grid_size(pixels: int, factor: int, name: str) -> int:
        if not isinstance(pixels, int) or pixels < factor or pixels % factor:
            raise ValueError(
                f"`{name}` must be a positive multiple of the tokenizer's factor {factor}, got {pixels!r}."
            )
        return pixels // factor

    def _completion_prefix(self, image, keep_rows: int, n: int, grid: tuple[int, int]) -> torch.LongTensor:
        h, w = grid
        pixels = pil_or_array_to_tensor(image, self.vqgan.config.in_channels, "image")
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

    def _sample_sliding_window(self, labels, cond_tokens, n, prefix, grid, guidance_scale, temperature, top_k, top_p,
                               generator, on_token):  # fmt: skip
        """Sample a grid larger than the prior's: each token sees a trained-size window around it (taming sec. 3.2).

        The window's top-left corner is centred on the position and clamped to the grid; the sequence fed to the
        prior is that window's tokens in raster order up to the position, after the usual prefix.
        """
        config = self.transformer.config
        H, W = grid
        th, tw = config.latent_height, config.latent_width
        if H < th or W < tw:
            raise ValueError(f"Sliding-window sampling needs a grid at least {th}x{tw}, got {H}x{W}.")
        device = self._execution_device
        tokens = torch.zeros(n, H, W, dtype=torch.long, device=device)
        known = 0 if prefix is None else prefix.shape[1]
        if known:
            tokens.view(n, -1)[:, :known] = prefix.to(device)
        guided = guidance_scale != 1.0
        start, stop = config.image_token_range
        for step, position in enumerate(range(known, H * W)):
            i, j = divmod(position, W)
            top, left = min(max(i - th // 2, 0), H - th), min(max(j - tw // 2, 0), W - tw)
            window = tokens[:, top : top + th, left : left + tw].reshape(n, -1)  # (B, th*tw)
            local = (i - top) * tw + (j - left)
            input_ids = self.transformer.build_input_ids(indices=window, class_labels=labels, cond_indices=cond_tokens)
            input_ids = input_ids[:, : config.prefix_length + local]  # (B, prefix + local)
            if guided:
                null_ids = input_ids.clone()
                null_ids[:, config.cond_length] = config.null_class_token  # the class token follows the condition
                input_ids = torch.cat([input_ids, null_ids])
            logits = self.transformer(input_ids=input_ids).logits[:, -1].float()  # (B or 2B, V)
            if guided:
                cond, uncond = logits.chunk(2)
                logits = uncond + guidance_scale * (cond - uncond)
            next_token = sample_next_token(logits, (start, stop), temperature, top_k, top_p, generator)
            tokens[:, i, j] = next_token
            on_token(step, tokens.view(n, -1)[:, : position + 1])
        return tokens
