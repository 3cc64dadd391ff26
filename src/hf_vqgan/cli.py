"""The `hf-vqgan` command line: sample, reconstruct, and convert checkpoints.

    hf-vqgan sample --model PATH_OR_ID --class-label 3 --num-images 16 --output grid.png
    hf-vqgan reconstruct --model PATH_OR_ID --input photo.png --output recon.png
    hf-vqgan convert-taming --config model.yaml --checkpoint last.ckpt --output DIR [--push-to-hub ID]
    hf-vqgan convert-diffusers --input DIR --output DIR --to vqmodel|hf_vqgan
    hf-vqgan demo --model PATH_OR_ID [--host 127.0.0.1] [--port N] [--device cpu]   (pip install hf_vqgan[demo])

Training is `accelerate launch examples/train.py vqgan|transformer ...` (see the README).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def _sample(args: argparse.Namespace) -> None:
    import torch

    from .image_utils import make_image_grid
    from .pipelines import VQGANTransformerPipeline

    pipe = VQGANTransformerPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=args.quiet)
    if args.device:
        pipe.to(args.device)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    images = pipe(
        class_labels=args.class_label,
        batch_size=1 if args.class_label is not None else args.num_images,
        num_images_per_prompt=args.num_images if args.class_label is not None else 1,
        condition_image=_open(args.condition_image) if args.condition_image else None,
        generator=generator,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        guidance_scale=args.guidance_scale,
        output_type="pt",
    ).images  # (N, C, H, W) in [0, 1]
    grid = make_image_grid(images * 2 - 1, nrow=args.nrow or math.ceil(math.sqrt(len(images))))
    _save(grid, args.output)


def _reconstruct(args: argparse.Namespace) -> None:
    import torch

    from .image_processor import VQGANImageProcessor
    from .image_utils import make_image_grid

    vqgan = _load_tokenizer(args.model)
    size = args.resolution or vqgan.config.sample_size
    # As the training data pipeline does: the shorter side resized to `size`, then the centre cropped (no stretching).
    processor = VQGANImageProcessor(resolution=size, channels=vqgan.config.in_channels)
    pixels = processor.preprocess(_open(args.input), name="input")  # (1, C, size, size)
    with torch.no_grad():
        indices = vqgan.tokenize(pixels)
        reconstruction = vqgan.decode_indices(indices).sample.clamp(-1, 1)
    grid = make_image_grid(torch.cat([pixels, reconstruction]), nrow=2) if args.side_by_side else None
    _save(grid if grid is not None else make_image_grid(reconstruction, nrow=1), args.output)
    h, w = indices.shape[-2:]
    print(f"{args.input}: {size}x{size} pixels -> {h}x{w} tokens -> {args.output}")


def _convert_taming(args: argparse.Namespace) -> None:
    from .convert.taming import convert_taming_checkpoint

    out = convert_taming_checkpoint(
        args.config, args.checkpoint, args.output, allow_pickle=args.allow_pickle, push_to_hub=args.push_to_hub
    )
    print(f"Converted {args.checkpoint} -> {out}")


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
    from .demo import build_demo, launch_demo
    from .pipelines import VQGANTransformerPipeline

    pipe = VQGANTransformerPipeline.from_pretrained(args.model)
    if args.device:
        pipe.to(args.device)
    blocks = build_demo(pipe, title=args.title, max_images=args.max_images, concurrency_limit=args.concurrency)
    launch_demo(blocks, host=args.host, port=args.port, share=args.share)


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


def _open(path: str):
    from PIL import Image

    if not Path(path).is_file():
        raise FileNotFoundError(f"No image file at {path!r}.")
    return Image.open(path)


def _save(image, output: str) -> None:
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    image.save(output)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-vqgan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("sample", help="Sample an image grid from a pipeline folder or Hub id.")
    p.add_argument("--model", required=True, help="A VQGANTransformerPipeline folder or Hub repo id.")
    p.add_argument("--class-label", type=int, default=None)
    p.add_argument("--condition-image", default=None, help="An image file, for image-conditional priors.")
    p.add_argument("--num-images", type=int, default=16)
    p.add_argument("--nrow", type=int, default=None)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--guidance-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--output", required=True, help="PNG file for the grid.")
    p.set_defaults(func=_sample)

    p = commands.add_parser("reconstruct", help="Tokenise and decode an image with a tokenizer (or pipeline).")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--resolution", type=int, default=None, help="Defaults to the model's sample_size.")
    p.add_argument("--side-by-side", action="store_true", help="Write the input next to its reconstruction.")
    p.set_defaults(func=_reconstruct)

    p = commands.add_parser("convert-taming", help="Convert a taming-transformers checkpoint (.ckpt + .yaml).")
    p.add_argument("--config", required=True, help="The model's YAML config.")
    p.add_argument("--checkpoint", required=True, help="The Lightning .ckpt file.")
    p.add_argument("--output", required=True, help="Output folder (a VQGANModel or a pipeline folder).")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="Unpickle arbitrary objects from the checkpoint. Only for files you trust: unpickling can run code.",
    )
    p.set_defaults(func=_convert_taming)

    p = commands.add_parser("convert-diffusers", help="Convert between VQGANModel and diffusers' VQModel folders.")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--to", required=True, choices=["vqmodel", "hf_vqgan"])
    p.set_defaults(func=_convert_diffusers)

    p = commands.add_parser("demo", help="A web app (Gradio) for a pipeline: generate, complete, reconstruct.")
    p.add_argument("--model", required=True, help="A VQGANTransformerPipeline folder or Hub repo id.")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines.")
    p.add_argument("--port", type=int, default=None, help="Defaults to Gradio's (7860, or the next free one).")
    p.add_argument("--device", default=None)
    p.add_argument("--title", default=None)
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
