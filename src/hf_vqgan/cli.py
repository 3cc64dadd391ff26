"""The `hf-vqgan` command line: sample, reconstruct, and convert checkpoints.

    hf-vqgan sample --model PATH_OR_ID --class-labels 3 circle --num-images 4 --output grid.png [--device cuda]
    hf-vqgan reconstruct --model PATH_OR_ID --input photo.png --output recon.png [--side-by-side]
    hf-vqgan convert-taming --config model.yaml --checkpoint last.ckpt --output DIR [--push-to-hub ID]
    hf-vqgan convert-llamagen --checkpoint vq_ds16_c2i.pt --output DIR [--model VQ-16|VQ-8] [--push-to-hub ID]
    hf-vqgan convert-diffusers --input DIR --output DIR --to vqmodel|hf_vqgan
    hf-vqgan demo --model PATH_OR_ID [--host 127.0.0.1] [--port N] [--device cpu]   (pip install hf_vqgan[demo])

Training is `accelerate launch examples/train.py vqgan|transformer ...` (see the README).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path


def _sample(args: argparse.Namespace) -> None:
    import torch

    from .image_utils import make_image_grid
    from .pipelines import VQGANTransformerPipeline

    _check_device(args.device)
    with _loading_bars(enabled=not args.quiet):
        pipe = VQGANTransformerPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=args.quiet)
    if args.device:
        pipe.to(args.device)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    labels = args.class_labels  # ints and class names as given: the pipeline maps names to ids
    images = pipe(
        class_labels=labels,
        batch_size=1 if labels is not None else args.num_images,
        num_images_per_prompt=args.num_images if labels is not None else 1,
        condition_image=_open(args.condition_image, args.max_image_pixels) if args.condition_image else None,
        generator=generator,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        guidance_scale=args.guidance_scale,
        output_type="pt",
    ).images  # (N, C, H, W) in [0, 1]
    # One row per class label when there are several; otherwise as square as the count allows.
    nrow = args.nrow or (args.num_images if labels and len(labels) > 1 else math.ceil(math.sqrt(len(images))))
    grid = make_image_grid(images * 2 - 1, nrow=nrow)
    _save(grid, args.output)
    print(f"Wrote {len(images)} images ({grid.width}x{grid.height} pixels) to {args.output}")


def _reconstruct(args: argparse.Namespace) -> None:
    import PIL.Image
    import torch

    from .image_processor import VQGANImageProcessor
    from .image_utils import convert_image_mode

    _check_device(args.device)
    vqgan = _load_tokenizer(args.model)
    if args.device:
        vqgan.to(args.device)
    size = args.resolution or vqgan.config.sample_size
    processor = VQGANImageProcessor(resolution=size, channels=vqgan.config.in_channels)
    processor.max_image_pixels = args.max_image_pixels
    image = convert_image_mode(_open(args.input, args.max_image_pixels), vqgan.config.in_channels)
    # As the training data pipeline does: the shorter side resized to `size`, then the centre cropped (no stretching).
    pixels = processor.preprocess(image, name="input").to(vqgan.device)  # (1, C, size, size)
    with torch.no_grad():
        indices = vqgan.tokenize(pixels)
        reconstruction = vqgan.decode_indices(indices).sample.clamp(-1, 1)
    # Written at the input's scale: the centre square it was cropped to, min(width, height) pixels a side.
    side = min(image.size)
    output = processor.postprocess(reconstruction)[0]
    if output.size != (side, side):
        output = output.resize((side, side), resample=PIL.Image.BICUBIC)
    if args.side_by_side:
        # The crop `preprocess` took, in the input's pixels (`side / size` of them per resized pixel).
        left, top = processor.sample_geometry(image.width, image.height, inference=True).box[:2]
        left, top = (
            min(round(left * side / size), image.width - side),
            min(round(top * side / size), image.height - side),
        )
        pair = PIL.Image.new(output.mode, (2 * side, side))
        pair.paste(image.crop((left, top, left + side, top + side)), (0, 0))
        pair.paste(output, (side, 0))
        output = pair
    _save(output, args.output)
    h, w = indices.shape[-2:]
    print(
        f"{args.input}: {image.width}x{image.height}, centre {side}x{side} -> {size}x{size} pixels -> {h}x{w} tokens "
        f"-> {args.output} ({output.width}x{output.height})"
    )


def _convert_taming(args: argparse.Namespace) -> None:
    from .convert.taming import convert_taming_checkpoint

    unknown_index = int(args.unknown_index) if args.unknown_index.lstrip("-").isdigit() else args.unknown_index
    out = convert_taming_checkpoint(
        args.config, args.checkpoint, args.output, allow_pickle=args.allow_pickle, push_to_hub=args.push_to_hub,
        remap_file=args.remap_file, unknown_index=unknown_index,
    )  # fmt: skip
    print(f"Converted {args.checkpoint} -> {out}")


def _convert_llamagen(args: argparse.Namespace) -> None:
    from .convert.llamagen import convert_llamagen_checkpoint, llamagen_model_name
    from .models import VQGANModel

    out = convert_llamagen_checkpoint(
        args.checkpoint, args.output, model=args.model, image_size=args.image_size, allow_pickle=args.allow_pickle,
        push_to_hub=args.push_to_hub,
    )  # fmt: skip
    config = VQGANModel.load_config(out)
    factor = 2 ** (len(config["channel_multipliers"]) - 1)
    print(
        f"Converted {args.checkpoint} ({llamagen_model_name(config) or 'a custom layout'}: f{factor}, "
        f"{config['codebook_size']} codes of dimension {config['code_dim']}) -> {out}"
    )


def _convert_diffusers(args: argparse.Namespace) -> None:
    from .convert.diffusers_vq import convert_diffusers_folder

    out = convert_diffusers_folder(args.input, args.output, to=args.to)
    print(f"Converted {args.input} -> {out} ({args.to})")


def _demo(args: argparse.Namespace) -> None:
    from .demo import require_gradio, write_space

    if args.write_space:
        for path in write_space(args.write_space, model=args.model, title=args.title):
            print(f"wrote {path}")
        return
    require_gradio()  # before loading the model: say how to install it at once
    _check_device(args.device)
    from .demo import build_demo, launch_demo
    from .pipelines import VQGANTransformerPipeline

    pipe = VQGANTransformerPipeline.from_pretrained(args.model)
    if args.device:
        pipe.to(args.device)
    blocks = build_demo(pipe, title=args.title, max_images=args.max_images, concurrency_limit=args.concurrency)
    launch_demo(blocks, host=args.host, port=args.port, share=args.share)


@contextlib.contextmanager
def _loading_bars(enabled: bool):
    """diffusers' and transformers' loading progress bars off inside the block when not `enabled`, as before after."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    modules = [m for m in (diffusers_logging, transformers_logging) if m.is_progress_bar_enabled()]
    if not enabled:
        for module in modules:
            module.disable_progress_bar()
    try:
        yield
    finally:
        for module in modules:
            module.enable_progress_bar()


def _check_device(name: str | None) -> None:
    """Refuse a `--device` this machine does not have before any model loads: one error line, exit status 2."""
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device name; use cpu, cuda, cuda:1, mps, ...") from None
    if device.type == "cpu":
        return
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if accelerator is None or accelerator.type != device.type:
        here = "cpu" if accelerator is None else f"cpu and {accelerator.type}"
        raise ValueError(f"--device {name!r} is not available on this machine (it has {here}); pass --device cpu.")
    count = torch.accelerator.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"--device {name!r} is not available: this machine has {count} {device.type} device(s), "
            f"{device.type}:0 to {device.type}:{count - 1}."
        )


def _load_tokenizer(name_or_path: str):
    from .models import VQGANModel

    path = Path(name_or_path)
    if (path / "model_index.json").is_file():
        return VQGANModel.from_pretrained(name_or_path, subfolder="vqgan")
    if path.is_dir() or "/" not in name_or_path:
        return VQGANModel.from_pretrained(name_or_path)
    from huggingface_hub import snapshot_download

    local = Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors"]))
    return VQGANModel.from_pretrained(local / "vqgan" if (local / "model_index.json").is_file() else local)


def _open(path: str, max_pixels: int | None):
    """The image at `path`, opened lazily once its header shows it is within the pixel budget (never a bomb)."""
    from PIL import Image

    from .image_utils import check_image_size

    check_image_size(path, max_pixels)
    return Image.open(path)


def _save(image, output: str) -> None:
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    image.save(output)


def _class_label(value: str) -> int | str:
    """A `--class-labels` entry: an integer class id, or a class name as the model's config spells it."""
    return int(value) if value.lstrip("-").isdigit() else value


DEVICE_HELP = "Where to run: cpu (the default), cuda, cuda:1, mps. A device this machine lacks is refused at once."


def _add_sample_and_reconstruct(commands) -> None:
    """The `sample` and `reconstruct` subcommands and their options."""
    p = commands.add_parser("sample", help="Sample an image grid from a pipeline folder or Hub id.")
    p.add_argument("--model", required=True, help="A VQGANTransformerPipeline folder or Hub repo id.")
    p.add_argument(
        "--class-labels",
        "--class-label",
        nargs="+",
        type=_class_label,
        default=None,
        metavar="LABEL",
        help="Class ids or names (e.g. 3 circle) for a class-conditional prior: --num-images of each, one row each.",
    )
    p.add_argument("--condition-image", default=None, help="An image file, for image-conditional priors.")
    p.add_argument(
        "--num-images", type=int, default=16, help="Images per class label (or in all, without labels). Default 16."
    )
    p.add_argument("--nrow", type=int, default=None, help="Images per grid row (default: one row per class label).")
    p.add_argument("--temperature", type=float, default=1.0, help="Softmax temperature; below 1 is more conservative.")
    p.add_argument("--top-k", type=int, default=None, help="Sample among the k likeliest codes only.")
    p.add_argument("--top-p", type=float, default=None, help="Nucleus sampling: the likeliest codes up to this mass.")
    p.add_argument(
        "--guidance-scale", type=float, default=1.0, help="Classifier-free guidance for class labels; 1 is none."
    )
    p.add_argument("--seed", type=int, default=0, help="Seed of the sampling generator; the same seed, the same grid.")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    _add_pixel_budget(p)
    p.add_argument("--quiet", action="store_true", help="No progress bars (loading and sampling).")
    p.add_argument("--output", required=True, help="PNG file for the grid.")
    p.set_defaults(func=_sample)

    p = commands.add_parser("reconstruct", help="Tokenise and decode an image with a tokenizer (or pipeline).")
    p.add_argument("--model", required=True, help="A VQGANModel or pipeline folder, or a Hub repo id of either.")
    p.add_argument("--input", required=True, help="The image file; its centre square is reconstructed.")
    p.add_argument(
        "--output",
        required=True,
        help="Image file for the reconstruction, at the input's scale: min(width, height) pixels a side.",
    )
    p.add_argument("--resolution", type=int, default=None, help="Defaults to the model's sample_size.")
    p.add_argument("--side-by-side", action="store_true", help="Write the input next to its reconstruction.")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    _add_pixel_budget(p)
    p.set_defaults(func=_reconstruct)


def _add_pixel_budget(parser: argparse.ArgumentParser) -> None:
    from .image_utils import DEFAULT_MAX_IMAGE_PIXELS

    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="Refuse input images with more pixels (width x height, read from the file header before decoding: "
        f"decompression bombs). Default {DEFAULT_MAX_IMAGE_PIXELS:,}.",
    )


def _add_upload_and_pickle_options(parser: argparse.ArgumentParser) -> None:
    """`--push-to-hub` and `--allow-pickle`, as every checkpoint converter takes them."""
    parser.add_argument(
        "--push-to-hub", default=None, metavar="REPO_ID", help="Also upload the output to this Hub repo."
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="Unpickle arbitrary objects from the checkpoint. Only for files you trust: unpickling can run code.",
    )


def _add_convert_llamagen(commands) -> None:
    p = commands.add_parser("convert-llamagen", help="Convert a LlamaGen VQ tokenizer checkpoint (vq_ds16_c2i.pt).")
    p.add_argument("--checkpoint", required=True, help="LlamaGen's .pt file (vq_ds16_c2i.pt, vq_ds8_c2i.pt, ...).")
    p.add_argument("--output", required=True, help="Output VQGANModel folder (with LlamaGen's image preprocessing).")
    p.add_argument(
        "--model",
        default=None,
        choices=["VQ-16", "VQ-8"],
        help="The architecture the checkpoint must have; inferred from its tensors when not given.",
    )
    p.add_argument("--image-size", type=int, default=256, help="The resolution the tokenizer is used at. Default 256.")
    _add_upload_and_pickle_options(p)
    p.set_defaults(func=_convert_llamagen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-vqgan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_sample_and_reconstruct(commands)

    p = commands.add_parser("convert-taming", help="Convert a taming-transformers checkpoint (.ckpt + .yaml).")
    p.add_argument("--config", required=True, help="The model's YAML config.")
    p.add_argument("--checkpoint", required=True, help="The Lightning .ckpt file.")
    p.add_argument("--output", required=True, help="Output folder (a VQGANModel or a pipeline folder).")
    _add_upload_and_pickle_options(p)
    p.add_argument(
        "--remap-file",
        default=None,
        metavar="NPY",
        help="For a config with `remap`: the .npy of used codebook indices, when the path the config names is not on "
        "this machine (else the checkpoint's `quantize.used` buffer or that path is read).",
    )
    p.add_argument(
        "--unknown-index",
        default="random",
        metavar="POLICY",
        help="For a config with `remap`: what a codebook row outside the used ones becomes: 'random' (taming's "
        "default, the only one its model classes pass), 'extra' (one more token) or a token number.",
    )
    p.set_defaults(func=_convert_taming)
    _add_convert_llamagen(commands)

    p = commands.add_parser("convert-diffusers", help="Convert between VQGANModel and diffusers' VQModel folders.")
    p.add_argument("--input", required=True, help="A VQGANModel or diffusers VQModel folder.")
    p.add_argument("--output", required=True, help="The folder to write the converted model to.")
    p.add_argument(
        "--to", required=True, choices=["vqmodel", "hf_vqgan"], help="vqmodel: diffusers' VQModel; hf_vqgan: ours."
    )
    p.set_defaults(func=_convert_diffusers)

    p = commands.add_parser("demo", help="A web app (Gradio) for a pipeline: generate, complete, reconstruct.")
    p.add_argument("--model", required=True, help="A VQGANTransformerPipeline folder or Hub repo id.")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines.")
    p.add_argument("--port", type=int, default=None, help="Defaults to Gradio's (7860, or the next free one).")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--title", default=None, help="The page title (default: VQGAN demo).")
    p.add_argument("--max-images", type=int, default=16, help="The most images one request may ask for.")
    p.add_argument("--concurrency", type=int, default=2, help="Requests sampled at once; more wait in the queue.")
    p.add_argument("--share", action="store_true", help="Also serve through a public Gradio link.")
    p.add_argument(
        "--write-space",
        default=None,
        metavar="DIR",
        help="Write app.py, requirements.txt and README.md of a Hugging Face Space for --model; no app.",
    )
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        args.func(args)
    except (ValueError, TypeError, OSError, ImportError) as error:  # OSError: missing or unreadable files
        print(f"hf-vqgan {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
