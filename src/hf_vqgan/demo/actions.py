"""What each tab of the demo does, as plain Python on a `VQGANTransformerPipeline`: no Gradio here.

    demo = VQGANDemo(pipe)
    result = demo.generate(class_label=3, num_images=4, seed=0)       # result.images, result.tokens (B, h, w)
    recon = demo.reconstruct(read_upload("photo.png"))                 # strip, code map, PSNR, codes used

`hf_vqgan.demo.ui.build_demo` wires these to the page; tests call them directly.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch

from .. import conditions
from ..image_utils import make_image_grid
from ..metrics import CodebookUsage, psnr
from .uploads import UploadError, fit_image, labels_from_drawing, to_channels
from .visuals import code_map, difference_map, draw_kept_rows, segmentation_palette

ProgressFn = Callable[[int, int], None]
"""Told `(tokens sampled, tokens to sample)` after each token."""


@dataclass
class SampleResult:
    """Images (PIL), their codes `(batch, h, w)`, the settings that made them, and a preview (a condition map or the
    kept region of a completion) when the tab has one."""

    images: list[PIL.Image.Image]
    tokens: torch.LongTensor
    settings: dict
    preview: PIL.Image.Image | None = None

    def save_tokens(self, folder: str | os.PathLike | None = None) -> str:
        """Write the codes and settings as JSON (`pipe.decode_tokens(torch.tensor(data["tokens"]))` decodes them)."""
        folder = tempfile.mkdtemp(prefix="hf_vqgan_demo_") if folder is None else os.fspath(folder)
        path = os.path.join(folder, "tokens.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"tokens": self.tokens.tolist(), **self.settings}, f)
        return path


@dataclass
class ReconstructResult:
    strip: PIL.Image.Image  # original | reconstruction | difference, side by side
    code_map: PIL.Image.Image  # the token grid, a colour per code id, at the image's size
    psnr: float
    codes: list[tuple[int, int]]  # (code id, count), most used first
    indices: torch.LongTensor = field(repr=False)  # (1, h, w)


class VQGANDemo:
    """
    The demo's actions on one pipeline. Thread-safe: the queue runs several requests at once, and only the codebook
    usage tally is shared between them (under a lock). Sampling never touches `pipe._interrupt`, which is shared.
    """

    def __init__(self, pipe, max_images: int = 16):
        self.pipe = pipe
        self.max_images = max_images
        config = pipe.transformer.config
        if config.cond_length and pipe.cond_vqgan is None:  # taming's coordinate or token condition stages
            raise ValueError(
                "This pipeline's prior reads condition tokens that no condition tokenizer makes (a converted taming "
                "coordinate or scene-layout model): sample it in Python with `pipe(condition_image=coordinate_map)` "
                "or `pipe(condition_tokens=...)`; the demo offers class labels and condition images only."
            )
        self.num_classes = int(config.num_classes or 0)
        self.grid = (config.latent_height, config.latent_width)
        self.factor = pipe.vqgan.downsample_factor
        self.channels = pipe.vqgan.config.in_channels
        self.condition_type = pipe.condition_processor.condition_type if pipe.cond_vqgan is not None else None
        self.usage = CodebookUsage(pipe.vqgan.config.codebook_size)
        self._usage_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- what it offers
    @property
    def image_size(self) -> tuple[int, int]:
        """`(width, height)` in pixels of what the prior samples."""
        return self.grid[1] * self.factor, self.grid[0] * self.factor

    @property
    def display_scale(self) -> int:
        """How much the pictures the demo draws (not the samples) are enlarged: to about 256 pixels (nearest)."""
        return max(1, 256 // max(self.image_size))

    @property
    def needs_condition(self) -> bool:
        return self.condition_type is not None

    def class_choices(self) -> list[tuple[str, int]]:
        """`(name, id)` per class: `id2label` names unless they are transformers' defaults (`LABEL_i`), else ids."""
        names = getattr(self.pipe.transformer.config, "id2label", None) or {}
        names = {int(k): str(v) for k, v in names.items()}
        default = all(names.get(i, f"LABEL_{i}") == f"LABEL_{i}" for i in range(self.num_classes))
        return [(str(i) if default else names.get(i, str(i)), i) for i in range(self.num_classes)]

    # ------------------------------------------------------------------------------------------------- sampling
    def generate(self, class_label: int | None = None, num_images: int = 4, seed: int = 0,
                 progress: ProgressFn | None = None, **sampling) -> SampleResult:  # fmt: skip
        """Sample `num_images` images of `class_label` (`None` for an unconditional prior); `sampling` holds
        `guidance_scale`, `temperature`, `top_k` (0: off) and `top_p` (1: off)."""
        return self._sample(class_label, num_images, seed, progress, sampling)

    def complete(self, image: PIL.Image.Image, keep_rows: int, class_label: int | None = None, num_images: int = 4,
                 seed: int = 0, progress: ProgressFn | None = None, **sampling) -> SampleResult:  # fmt: skip
        """Keep the top `keep_rows` token rows of `image` (fitted to the output size) and sample the rest."""
        if not isinstance(keep_rows, int) or not 0 <= keep_rows <= self.grid[0]:
            raise UploadError(f"Keep between 0 and {self.grid[0]} token rows, got {keep_rows!r}.")
        fitted = fit_image(to_channels(image, self.channels), *self.image_size)
        extra = {"image": fitted, "keep_rows": keep_rows}
        result = self._sample(class_label, num_images, seed, progress, sampling, extra)
        result.preview = self.kept_region(image, keep_rows)
        return result

    def kept_region(self, image: PIL.Image.Image, keep_rows: int) -> PIL.Image.Image:
        """The input at the output size with the rows a completion keeps marked (the rest dimmed)."""
        fitted = fit_image(to_channels(image, self.channels), *self.image_size)
        return draw_kept_rows(fitted, keep_rows * self.factor)

    def condition(self, condition_image, class_label: int | None = None, num_images: int = 4, seed: int = 0,
                  progress: ProgressFn | None = None, **sampling) -> SampleResult:  # fmt: skip
        """Sample from an image-conditional prior; `condition_image` is an uploaded image or, for segmentation, a
        label map (single-channel) or a drawing in `segmentation_colors()`. The preview is the condition map the
        pipeline derived, as its tokenizer sees it."""
        condition = self.prepare_condition(condition_image)
        result = self._sample(class_label, num_images, seed, progress, sampling, {"condition_image": condition})
        pixels = self.pipe.prepare_condition(condition)  # (1, C, h, w) in [-1, 1]
        shown = conditions.condition_to_pixels(pixels, self.condition_type, size=self.image_size[0])
        result.preview = make_image_grid(shown, nrow=1, padding=0, scale=self.display_scale)
        return result

    def segmentation_colors(self) -> np.ndarray:
        """`(num_labels, 3)` colours in 0..255, label i drawn in row i (the palette condition previews use)."""
        return segmentation_palette(self.pipe.condition_processor.config.num_labels)

    def prepare_condition(self, upload):
        """An uploaded condition at the pipeline's size: a fitted image (edges, lowres), or a label or depth map."""
        width, height = self.image_size
        if self.condition_type in conditions.DERIVED_CONDITION_TYPES:
            return fit_image(to_channels(upload, self.channels, "condition image"), width, height)
        if self.condition_type == "segmentation":
            if isinstance(upload, PIL.Image.Image) and upload.mode in ("RGB", "RGBA"):
                upload = PIL.Image.fromarray(labels_from_drawing(upload, self.segmentation_colors()).astype(np.uint8))
            try:
                labels = conditions.read_label_map(upload)
            except ValueError as error:
                raise UploadError(str(error)) from error
            resized = PIL.Image.fromarray(labels.astype(np.int32)).resize((width, height), PIL.Image.NEAREST)
            return np.asarray(resized).astype(np.int64)
        depth = conditions.read_depth_map(upload)
        return np.asarray(PIL.Image.fromarray(depth).resize((width, height), PIL.Image.BILINEAR))

    def _sample(self, class_label, num_images, seed, progress, sampling, extra=None) -> SampleResult:
        settings = self._settings(class_label, num_images, seed, sampling)
        keep = (extra or {}).get("keep_rows") or 0
        total = (self.grid[0] - keep) * self.grid[1]

        def on_step_end(pipe, step, timestep, callback_kwargs):
            if progress is not None:
                progress(step + 1, total)
            return {}

        labels = settings["class_label"]
        tokens = self.pipe(
            class_labels=labels, batch_size=1 if labels is not None else num_images,
            num_images_per_prompt=num_images if labels is not None else 1,
            generator=torch.Generator().manual_seed(seed), output_type="latent", callback_on_step_end=on_step_end,
            temperature=settings["temperature"], top_k=settings["top_k"], top_p=settings["top_p"],
            guidance_scale=settings["guidance_scale"], **(extra or {}),
        ).images  # fmt: skip  # (B, h, w)
        self._count(tokens)
        return SampleResult(images=self.pipe.decode_tokens(tokens), tokens=tokens.cpu(), settings=settings)

    def _settings(self, class_label, num_images, seed, sampling: dict) -> dict:
        """Check the controls once and say what each one means to the pipeline (0 top-k and 1 top-p: off)."""
        if not isinstance(num_images, int) or not 1 <= num_images <= self.max_images:
            raise UploadError(f"Ask for 1 to {self.max_images} images, got {num_images!r}.")
        if not isinstance(seed, int) or seed < 0:
            raise UploadError(f"The seed must be a whole number >= 0, got {seed!r}.")
        if self.num_classes and class_label is None:
            raise UploadError("Pick a class: this model is class-conditional.")
        unknown = set(sampling) - {"guidance_scale", "temperature", "top_k", "top_p"}
        if unknown:
            raise TypeError(f"Unknown sampling settings {sorted(unknown)}.")
        top_k, top_p = sampling.get("top_k") or None, sampling.get("top_p")
        return {
            "class_label": None if not self.num_classes else int(class_label),
            "num_images": num_images,
            "seed": seed,
            "guidance_scale": float(sampling.get("guidance_scale", 1.0)) if self.num_classes else 1.0,
            "temperature": float(sampling.get("temperature", 1.0)),
            "top_k": None if top_k is None else int(top_k),
            "top_p": None if top_p is None or top_p >= 1.0 else float(top_p),
        }

    # ---------------------------------------------------------------------------------------- reconstruction
    @torch.no_grad()
    def reconstruct(self, image: PIL.Image.Image) -> ReconstructResult:
        """Tokenise and decode `image` at the model's size (centre crop); compare the two and map the codes."""
        pixels = self.pipe.image_processor.preprocess(fit_image(to_channels(image, self.channels), *self.image_size))
        vqgan = self.pipe.vqgan
        indices = vqgan.tokenize(pixels.to(vqgan.device, vqgan.dtype))  # (1, h, w)
        reconstruction = vqgan.decode_indices(indices).sample.float().clamp(-1, 1).cpu()  # (1, C, H, W)
        self._count(indices)
        as_rgb = (lambda x: x.expand(-1, 3, -1, -1)) if self.channels == 1 else (lambda x: x)
        strip = torch.cat([as_rgb(pixels), as_rgb(reconstruction), difference_map(pixels, reconstruction)])
        ids, counts = indices.flatten().unique(return_counts=True)
        order = counts.argsort(descending=True, stable=True)
        return ReconstructResult(
            strip=make_image_grid(strip, nrow=3, padding=2 * self.display_scale, scale=self.display_scale),
            code_map=code_map(indices[0].cpu(), vqgan.config.codebook_size, self.factor * self.display_scale),
            psnr=float(psnr(pixels, reconstruction)),
            codes=[(int(ids[i]), int(counts[i])) for i in order],
            indices=indices.cpu(),
        )

    # ------------------------------------------------------------------------------------------------- about
    def _count(self, indices: torch.Tensor) -> None:
        with self._usage_lock:
            self.usage.update(indices)

    def usage_report(self) -> dict:
        """The codebook usage over everything this demo has sampled and reconstructed since it started."""
        with self._usage_lock:
            return {**self.usage.compute(), "codebook_size": self.usage.codebook_size}

    def model_card(self) -> str:
        """The README.md of the folder the pipeline was loaded from, else a card rendered from its config."""
        source = getattr(self.pipe.config, "_name_or_path", None)
        readme = os.path.join(source, "README.md") if source else None
        if readme and os.path.isfile(readme):
            with open(readme, encoding="utf-8") as f:
                card = f.read()
        else:
            card = str(self.pipe.model_card(repo_id=source or "path/to/this/folder"))
        if card.startswith("---\n"):  # the YAML metadata block is for the Hub, not for reading
            end = card.find("\n---", 4)
            card = card[end + 4 :].lstrip() if end != -1 else card
        return card

    def config(self) -> dict:
        """Every component's config, as JSON-friendly dicts."""
        pipe = self.pipe
        names = ("vqgan", "transformer", "cond_vqgan", "image_processor", "condition_processor")
        components = {name: getattr(pipe, name, None) for name in names}
        configs = {}
        for name, component in components.items():
            if component is None:
                continue
            config = component.config
            configs[name] = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        return json.loads(json.dumps(configs, default=str))
