"""examples/train.py with image conditions (issue 6): for each condition type, a condition tokenizer trained for a
few steps, a prior over its tokens trained for a few steps, and the saved pipeline sampling from a condition.

The paired conditions (segmentation, depth) come from an image folder whose metadata.jsonl names each image's maps,
as train.py's help tells users to lay them out; the derived ones (edges, lowres) are computed from the images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from PIL import Image

from hf_vqgan import VQGANImageProcessor, VQGANModel
from hf_vqgan.conditions import read_depth_map
from hf_vqgan.image_utils import decode_image
from hf_vqgan.training.data import load_image_dataset
from testing_utils import load_pipeline, prior_size, small_vqgan_config

SIZE = 16  # training resolution; the folder's images are 20x20, so maps go through a real (non-integer) resize
SOURCE = 20
NUM_LABELS = 3
# Tokenizers of RGB images: f=2, or f=1 for the 4x4 lowres maps; train.py sets a condition tokenizer's channels from
# the condition type.
VQGAN = small_vqgan_config(3)
FAST = ["--train_batch_size", "4", "--eval_batch_size", "8", "--max_train_steps", "2", "--validation_steps", "2",
        "--checkpointing_steps", "2", "--report_to", "none", "--validation_split", "0.25", "--resolution", SIZE]  # fmt: skip
CONDITION_ARGS = {
    "segmentation": ["--condition_column", "segmentation"],
    "depth": ["--condition_column", "depth"],
    "edges": [],
    "lowres": ["--lowres_factor", "4"],  # 16x16 images -> 4x4 maps
}


@pytest.fixture(scope="module")
def paired_folder(tmp_path_factory) -> Path:
    """12 RGB images with a palette-PNG label map, a 16-bit depth map and a class label each, via metadata.jsonl."""
    root = tmp_path_factory.mktemp("paired")
    for sub in ("images", "segmentation", "depth"):
        (root / sub).mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        labels = np.zeros((SOURCE, SOURCE), dtype=np.uint8)
        labels[:, rng.integers(4, 16) :] = 1
        labels[rng.integers(4, 16) :, : rng.integers(4, 16)] = 2
        colours = rng.integers(0, 256, (NUM_LABELS, 3), dtype=np.uint8)
        Image.fromarray(colours[labels]).save(root / "images" / f"{i}.png")
        segmentation = Image.fromarray(labels, mode="L").convert("P")
        segmentation.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * 759)  # colours unlike the indices
        segmentation.save(root / "segmentation" / f"{i}.png")
        depth = labels.astype(np.uint16) * 5000 + rng.integers(0, 500, (SOURCE, SOURCE)).astype(np.uint16)
        Image.fromarray(depth).save(root / "depth" / f"{i}.png")
        rows.append({"file_name": f"images/{i}.png", "segmentation_file_name": f"segmentation/{i}.png",
                     "depth_file_name": f"depth/{i}.png", "label": i % 2})  # fmt: skip
    (root / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, str]:
    """An (untrained) RGB image tokenizer folder, and the condition tokenizer and prior configs as JSON files."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    VQGANModel(**VQGAN).save_pretrained(root / "vqgan")
    (root / "cond.json").write_text(json.dumps(VQGAN))
    (root / "cond_f1.json").write_text(json.dumps(small_vqgan_config(3, channel_multipliers=[1], sample_size=4)))
    (root / "prior.json").write_text(json.dumps(prior_size()))
    return {name: str(root / name) for name in ("vqgan", "cond.json", "cond_f1.json", "prior.json")}


def train_condition_tokenizer(run_train, condition_type, folder, model_files, output_dir, *extra):
    model_config = model_files["cond_f1.json" if condition_type == "lowres" else "cond.json"]
    argv = ["vqgan", "--model_config", model_config, "--condition_type", condition_type,
            *CONDITION_ARGS[condition_type], "--train_data_dir", folder, "--output_dir", output_dir, *FAST, *extra]  # fmt: skip
    if condition_type == "segmentation":
        argv += ["--num_labels", NUM_LABELS]
    return run_train(argv)


def train_prior(run_train, condition_type, folder, model_files, cond_vqgan, output_dir, tokens, *extra):
    argv = ["transformer", "--vqgan_model_name_or_path", model_files["vqgan"], "--cond_vqgan_model_name_or_path",
            cond_vqgan, "--condition_type", condition_type, *CONDITION_ARGS[condition_type], "--train_data_dir",
            folder, "--prior_config", model_files["prior.json"], "--output_dir", output_dir, "--tokenized_cache_dir",
            tokens, "--num_validation_samples", "2", *FAST, *extra]  # fmt: skip
    return run_train(argv)


def sampling_conditions(condition_type: str, examples) -> object:
    """What a user hands the pipeline for these dataset examples: the image at the output size for derived types,
    the map at the output size for paired ones (resized as training resizes it: nearest for labels)."""
    transform = VQGANImageProcessor(SIZE, 3, center_crop=True)
    if condition_type in ("edges", "lowres"):
        return torch.stack([transform(example["image"]) for example in examples])  # (B, 3, H, W) in [-1, 1]
    maps = []
    for example in examples:
        value = example[condition_type]
        if condition_type == "segmentation":
            image, resample = decode_image(value), Image.NEAREST
        else:
            image, resample = Image.fromarray(read_depth_map(value)), Image.BILINEAR
        geometry = transform.sample_geometry(*image.size)
        maps.append(np.asarray(VQGANImageProcessor.apply_geometry(image, geometry, resample=resample)))
    return np.stack(maps)  # (B, H, W): labels (P images give their indices) or float depth


@pytest.mark.parametrize("condition_type", ["segmentation", "depth", "edges", "lowres"])
def test_condition_type_end_to_end(condition_type, paired_folder, model_files, run_train, tmp_path):
    # Stage 1 on the condition maps. Segmentation keeps the default LPIPS and GAN weights: they must be switched off
    # for it (no LPIPS weights exist on this offline machine, so building LPIPS would fail the run).
    extra = [] if condition_type == "segmentation" else ["--perceptual_weight", "0", "--disc_weight", "0"]
    run = train_condition_tokenizer(run_train, condition_type, paired_folder, model_files, tmp_path / "cond", *extra)
    assert run.returncode == 0
    cond_config = json.loads((tmp_path / "cond" / "config.json").read_text())
    channels = {"segmentation": NUM_LABELS, "depth": 1, "edges": 1, "lowres": 3}[condition_type]
    assert cond_config["in_channels"] == cond_config["out_channels"] == channels
    metrics = json.loads((tmp_path / "cond" / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["skipped_images"] == 0
    if condition_type == "segmentation":
        assert 0.0 <= metrics["label_accuracy"] <= 1.0 and "psnr" not in metrics
        logs = run.train_logs()[1]
        # --disc_start defaults to 0, so a discriminator would be on from the first step.
        assert logs["perceptual"] == 0.0 and logs["gan"] == 0.0 and logs["disc_factor"] == 0.0
        assert not [key for key in logs if key.startswith("disc_") and key != "disc_factor"]  # no discriminator step
    else:
        assert math.isfinite(metrics["psnr"])

    # Stage 2: condition tokens prepended in their own id range, loss on image tokens only.
    run = train_prior(run_train, condition_type, paired_folder, model_files, tmp_path / "cond", tmp_path / "pipe",
                      tmp_path / "tokens")  # fmt: skip
    assert run.returncode == 0
    assert {"vqgan", "transformer", "cond_vqgan", "image_processor", "condition_processor", "model_index.json"} <= {
        p.name for p in (tmp_path / "pipe").iterdir()
    }
    pipe = load_pipeline(tmp_path / "pipe")
    config = pipe.transformer.config
    condition_size = SIZE // 4 if condition_type == "lowres" else SIZE // 2  # f=1 on 4x4 maps, f=2 on 16x16 ones
    assert config.num_classes == 0
    assert config.cond_length == condition_size**2 and config.prefix_length == config.cond_length
    assert config.cond_codebook_size == 16 and config.cond_token_offset >= config.codebook_size
    # The preprocessing settings travel with the pipeline as its condition processor, not in the prior's config.
    processor = pipe.condition_processor.config
    assert processor.condition_type == condition_type and processor.resolution == SIZE
    assert processor.num_labels == (NUM_LABELS if condition_type == "segmentation" else None)
    assert processor.lowres_factor == (4 if condition_type == "lowres" else 8)
    assert not hasattr(config, "condition_type")

    # The tokens the prior trained on are the tokens the pipeline computes from the same example at sampling time.
    validation = load_image_dataset(train_data_dir=paired_folder, validation_split=0.25, decode=True)["validation"]
    (cache,) = list((tmp_path / "tokens").glob("tokens-*"))
    trained = torch.tensor(load_from_disk(str(cache))["validation"]["cond_indices"])  # (N, cond_length)
    conditions = sampling_conditions(condition_type, validation)
    assert torch.equal(pipe._condition_tokens(conditions, len(validation)), trained)

    images = pipe(condition_image=conditions[:1], generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (1, 3, SIZE, SIZE)
    latent = pipe(condition_image=conditions[:2], batch_size=2, output_type="latent").images
    assert latent.shape == (2, SIZE // 2, SIZE // 2) and latent.dtype == torch.long
    with pytest.raises(ValueError, match="pass `condition_image`"):
        pipe(output_type="latent")


def test_class_labels_and_condition_combined(paired_folder, model_files, run_train, tmp_path):
    assert train_condition_tokenizer(run_train, "edges", paired_folder, model_files, tmp_path / "cond",
                                     "--perceptual_weight", "0", "--disc_weight", "0").returncode == 0  # fmt: skip
    run = train_prior(run_train, "edges", paired_folder, model_files, tmp_path / "cond", tmp_path / "pipe",
                      tmp_path / "tokens", "--class_column", "label")  # fmt: skip
    assert run.returncode == 0
    pipe = load_pipeline(tmp_path / "pipe")
    config = pipe.transformer.config
    assert config.num_classes == 2 and config.prefix_length == config.cond_length + 1
    image = Image.open(paired_folder / "images" / "0.png").resize((SIZE, SIZE))
    images = pipe(class_labels=[0, 1], condition_image=image, guidance_scale=2.0, output_type="pt").images
    assert images.shape == (2, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="pass `class_labels`"):
        pipe(condition_image=image)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["vqgan", "--condition_type", "depth"], "pass --condition_column"),
        (["vqgan", "--condition_type", "segmentation", "--condition_column", "segmentation"], "--num_labels >= 2"),
        (["vqgan", "--condition_type", "lowres", "--lowres_factor", "0"], "positive integer"),
        (["transformer", "--vqgan_model_name_or_path", "x", "--condition_type", "edges"], "go together"),
        (
            [
                "transformer",
                "--vqgan_model_name_or_path",
                "x",
                "--cond_vqgan_model_name_or_path",
                "y",
                "--condition_type",
                "segmentation",
            ],
            "pass --condition_column",
        ),  # fmt: skip
    ],
)
def test_contradictory_condition_options_stop_before_loading(argv, match, run_train, capsys):
    assert run_train(argv).returncode == 2
    assert match in capsys.readouterr().err


def test_condition_tokenizer_of_another_type_is_refused(paired_folder, model_files, run_train, tmp_path):
    # A one-channel (edges) tokenizer cannot read the three-channel lowres maps of RGB images.
    VQGANModel(**small_vqgan_config()).save_pretrained(tmp_path / "edges_vqgan")
    with pytest.raises(ValueError, match="reads 1-channel maps, but lowres conditions .* have 3"):
        train_prior(run_train, "lowres", paired_folder, model_files, tmp_path / "edges_vqgan", tmp_path / "pipe",
                    tmp_path / "tokens")  # fmt: skip
    with pytest.raises(ValueError, match="must divide the resolution"):
        train_condition_tokenizer(run_train, "lowres", paired_folder, model_files, tmp_path / "cond",
                                  "--lowres_factor", "3")  # fmt: skip


@pytest.mark.slow
def test_lowres_digits_through_accelerate_launch(accelerate_launch, tmp_path, tiny_vqgan_json, tiny_prior_config):
    """The demo's recipe at toy size, launched as users launch it: the `digits-lowres-cond` preset tokenises the 4x4
    maps of 32x32 digits (factor 8) one code per pixel, and the prior reads those 16 tokens and no class label."""
    steps = ["--max_train_samples", "32", "--train_batch_size", "8", "--max_train_steps", "2", "--validation_steps",
             "2", "--checkpointing_steps", "2", "--report_to", "none"]  # fmt: skip
    lowres = ["--condition_type", "lowres", "--lowres_factor", "8", "--resolution", "32"]
    accelerate_launch(["vqgan", "--preset", "digits-lowres-cond", *lowres, "--image_channels", "1", "--output_dir",
                       tmp_path / "cond", "--perceptual_weight", "0", "--disc_weight", "0", *steps])  # fmt: skip
    VQGANModel(**json.loads(Path(tiny_vqgan_json).read_text())).save_pretrained(tmp_path / "vqgan")
    (tmp_path / "prior.json").write_text(json.dumps(tiny_prior_config))
    accelerate_launch(["transformer", "--vqgan_model_name_or_path", tmp_path / "vqgan", "--cond_vqgan_model_name_or_path",
                       tmp_path / "cond", *lowres, "--prior_config", tmp_path / "prior.json", "--output_dir",
                       tmp_path / "pipe", "--num_validation_samples", "2", "--tokenized_cache_dir", tmp_path / "tokens",
                       *steps])  # fmt: skip

    pipe = load_pipeline(tmp_path / "pipe")
    assert pipe.cond_vqgan.downsample_factor == 1 and pipe.cond_vqgan.config.in_channels == 1
    config = pipe.transformer.config
    assert config.cond_length == 16 and config.num_classes == 0
    assert pipe.condition_processor.config.lowres_factor == 8
    digit = torch.rand(1, 1, 4, 4) * 2 - 1  # an already downsampled condition
    assert pipe(condition_image=digit, output_type="pt").images.shape == (1, 1, 32, 32)
