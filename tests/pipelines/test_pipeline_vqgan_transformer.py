"""`VQGANTransformerPipeline` with tiny random components: outputs, reproducibility, completion, sliding windows,
saving and loading (folders, and Hub ids through an offline cache), pushing (intercepted), offload, and errors."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from fixtures import taming_fixtures
from hf_vqgan import VQGANModel, VQGANTransformerPipeline
from hf_vqgan.models.sampling import SlidingWindowDecodeStep
from testing_utils import (
    error_prior_config,
    error_vqgan_config,
    load_pipeline,
    random_image,
    sampling_pipeline,
    seeded,
    tiny_pipeline,
    tiny_prior,
    tiny_vqgan,
    vqgan_config,
)

CODEBOOK_SIZE = 32  # the codebook of `sampling_pipeline`'s tokenizer (testing_utils)
GRID = 8  # the prior's latent grid is GRID x GRID
FACTOR = 2  # the tokenizer's downsampling factor: 16x16 pixels <-> 8x8 tokens
SIZE = GRID * FACTOR


@pytest.fixture(scope="module")
def class_pipe() -> VQGANTransformerPipeline:
    return sampling_pipeline(num_classes=3)


@pytest.fixture(scope="module")
def uncond_pipe() -> VQGANTransformerPipeline:
    return sampling_pipeline(num_classes=0, channels=1, seed=1)


# ------------------------------------------------------------------------------------------------- outputs
def test_every_output_type_has_its_shape_and_agrees_with_the_others(class_pipe):
    kwargs = dict(class_labels=[0, 2], num_images_per_prompt=2)
    latent = class_pipe(**kwargs, generator=seeded(), output_type="latent").images
    pt = class_pipe(**kwargs, generator=seeded(), output_type="pt").images
    array = class_pipe(**kwargs, generator=seeded(), output_type="np").images
    pil = class_pipe(**kwargs, generator=seeded(), output_type="pil").images

    assert latent.shape == (4, GRID, GRID) and latent.dtype == torch.long
    assert 0 <= latent.min() and latent.max() < CODEBOOK_SIZE
    assert pt.shape == (4, 3, SIZE, SIZE) and 0 <= pt.min() and pt.max() <= 1
    assert isinstance(array, np.ndarray) and array.shape == (4, SIZE, SIZE, 3)
    assert len(pil) == 4 and all(im.size == (SIZE, SIZE) and im.mode == "RGB" for im in pil)
    # One seed, one sample: each output type is a view of the same token grid.
    assert torch.equal(class_pipe.decode_tokens(latent, output_type="pt"), pt)
    np.testing.assert_array_equal(array, pt.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(np.stack([np.asarray(im) for im in pil]), (array * 255).round().astype(np.uint8))


def test_return_dict_false_gives_a_tuple(uncond_pipe):
    output = uncond_pipe(batch_size=2, generator=seeded(), output_type="latent", return_dict=False)
    assert isinstance(output, tuple) and len(output) == 1 and output[0].shape == (2, GRID, GRID)


def test_unconditional_batch_and_grayscale_images(uncond_pipe):
    images = uncond_pipe(batch_size=3, num_images_per_prompt=2, generator=seeded(), output_type="pil").images
    assert len(images) == 6 and all(im.mode == "L" and im.size == (SIZE, SIZE) for im in images)
    array = uncond_pipe(batch_size=2, generator=seeded(), output_type="np").images
    assert array.shape == (2, SIZE, SIZE, 1)


def test_class_labels_reach_the_prior_in_order(class_pipe):
    # top_k=1 is greedy: a sample is a function of its class only, so the pipeline must equal the prior itself.
    tokens = class_pipe(class_labels=[0, 2], num_images_per_prompt=2, top_k=1, output_type="latent").images
    expected = class_pipe.transformer.sample(class_labels=torch.tensor([0, 0, 2, 2]), top_k=1)
    assert torch.equal(tokens, expected)
    as_tensor = class_pipe(class_labels=torch.tensor([2]), top_k=1, output_type="latent").images
    as_int = class_pipe(class_labels=2, top_k=1, output_type="latent").images
    assert torch.equal(as_tensor, expected[2:3]) and torch.equal(as_int, expected[2:3])


def test_same_seed_same_images_and_different_seeds_differ(class_pipe):
    for options in (dict(), dict(temperature=0.7, top_k=10, top_p=0.9, guidance_scale=2.0)):
        first = class_pipe(class_labels=[1, 1], generator=seeded(0), output_type="pt", **options).images
        again = class_pipe(class_labels=[1, 1], generator=seeded(0), output_type="pt", **options).images
        other = class_pipe(class_labels=[1, 1], generator=seeded(1), output_type="pt", **options).images
        assert torch.equal(first, again)
        assert not torch.equal(first, other)
        assert not torch.equal(first[0], first[1])  # one generator, two different draws within the batch


def test_guidance_changes_the_samples(class_pipe):
    plain = class_pipe(class_labels=1, generator=seeded(), output_type="latent").images
    guided = class_pipe(class_labels=1, guidance_scale=3.0, generator=seeded(), output_type="latent").images
    assert not torch.equal(plain, guided)


def test_callback_and_progress_bar_count_the_tokens(class_pipe):
    steps = []
    stream = io.StringIO()
    class_pipe.set_progress_bar_config(disable=False, file=stream)
    try:
        class_pipe(class_labels=[0, 1], generator=seeded(), output_type="latent",
                   callback=lambda step, tokens: steps.append((step, tuple(tokens.shape))))  # fmt: skip
    finally:
        class_pipe.set_progress_bar_config(disable=True)
    T = GRID * GRID
    assert steps == [(step, (2, step + 1)) for step in range(T)]
    assert f"{T}/{T}" in stream.getvalue()


# ------------------------------------------------------------------------------------------- token helpers
def test_encode_images_accepts_pil_arrays_and_tensors(class_pipe):
    images = [random_image(0), random_image(1)]
    from_pil = class_pipe.encode_images(images)
    array = np.stack([np.asarray(im) for im in images])  # (B, H, W, C) uint8
    from_array = class_pipe.encode_images(array)
    from_tensor = class_pipe.encode_images(torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert from_pil.shape == (2, GRID, GRID) and from_pil.dtype == torch.long
    assert torch.equal(from_pil, from_array) and torch.equal(from_pil, from_tensor)
    assert torch.equal(class_pipe.encode_images(images[1]), from_pil[1:])

    decoded = class_pipe.decode_tokens(from_pil, output_type="np")
    assert decoded.shape == (2, SIZE, SIZE, 3) and 0 <= decoded.min() and decoded.max() <= 1
    with pytest.raises(ValueError, match="output_type"):
        class_pipe.decode_tokens(from_pil, output_type="latent")
    with pytest.raises(ValueError, match=r"shape \(batch, 3, height, width\)"):
        class_pipe.encode_images(torch.zeros(1, 1, SIZE, SIZE))
    with pytest.raises(TypeError, match="PIL image"):
        class_pipe.encode_images("image.png")


# -------------------------------------------------------------------------------------------- completion
@pytest.mark.parametrize("keep_rows", [0, 3, GRID])
def test_completion_keeps_the_given_rows_exactly(class_pipe, keep_rows):
    image = random_image(3)
    given = class_pipe.encode_images(image)  # (1, h, w)
    steps = []
    tokens = class_pipe(
        class_labels=[0, 2], image=image, keep_rows=keep_rows, generator=seeded(), output_type="latent",
        callback=lambda step, t: steps.append(step),
    ).images  # fmt: skip
    assert tokens.shape == (2, GRID, GRID)
    assert torch.equal(tokens[:, :keep_rows], given[:, :keep_rows].expand(2, -1, -1))
    assert len(steps) == (GRID - keep_rows) * GRID  # only the missing rows are sampled
    if keep_rows == 0:
        assert not torch.equal(tokens[0], given[0])


def test_completion_of_a_batch_of_images(uncond_pipe):
    images = [random_image(4, mode="L"), random_image(5, mode="L")]
    given = uncond_pipe.encode_images(images)
    tokens = uncond_pipe(batch_size=2, image=images, keep_rows=5, generator=seeded(), output_type="latent").images
    assert torch.equal(tokens[:, :5], given[:, :5])


# ----------------------------------------------------------------------------------------- sliding window
def test_sliding_window_samples_the_requested_size(class_pipe):
    height, width = 12 * FACTOR, 16 * FACTOR
    images = class_pipe(class_labels=[0, 1], height=height, width=width, generator=seeded(), output_type="np").images
    assert images.shape == (2, height, width, 3)
    tokens = class_pipe(class_labels=1, height=height, width=width, generator=seeded(), output_type="latent").images
    assert tokens.shape == (1, 12, 16) and tokens.max() < CODEBOOK_SIZE
    again = class_pipe(class_labels=1, height=height, width=width, generator=seeded(), output_type="latent").images
    assert torch.equal(tokens, again)


def test_sliding_window_feeds_the_trained_window_around_each_token(uncond_pipe):
    """Greedy samples let each token be recomputed from the window the paper prescribes (Esser et al. sec. 3.2): the
    trained-size window centred on the token, clamped to the grid, read in raster order up to the token."""
    H, W = 10, 13
    tokens = uncond_pipe(height=H * FACTOR, width=W * FACTOR, top_k=1, output_type="latent").images[0]  # (h, w)
    prior = uncond_pipe.transformer
    half = GRID // 2
    for i, j in [(0, 0), (2, 11), (5, 6), (9, 12), (9, 0)]:
        top, left = min(max(i - half, 0), H - GRID), min(max(j - half, 0), W - GRID)
        window = tokens[top : top + GRID, left : left + GRID].reshape(-1)
        context = window[: (i - top) * GRID + (j - left)]
        input_ids = torch.cat([torch.tensor([prior.config.start_token]), context])[None]
        with torch.no_grad():
            logits = prior(input_ids=input_ids).logits[0, -1, :CODEBOOK_SIZE]
        assert tokens[i, j] == logits.argmax(), (i, j)


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_sliding_window_at_the_trained_size_matches_the_plain_sampler(class_pipe, guidance_scale):
    # Same tokens from the window step (full re-computation) and from the KV-cache step of the one loop.
    labels = torch.tensor([0, 2])
    prior = class_pipe.transformer
    window = prior.sample(class_labels=labels, guidance_scale=guidance_scale, top_k=1,
                          decode_step=SlidingWindowDecodeStep())  # fmt: skip
    plain = prior.sample(class_labels=labels, guidance_scale=guidance_scale, top_k=1)
    assert torch.equal(window, plain)
    # The pipeline hands a larger grid to the prior, which samples it with the window.
    tokens = class_pipe(class_labels=[0, 2], height=10 * FACTOR, top_k=1, guidance_scale=guidance_scale,
                        output_type="latent").images  # fmt: skip
    expected = prior.sample(class_labels=labels, guidance_scale=guidance_scale, top_k=1, grid=(10, GRID))
    assert torch.equal(tokens, expected)


def test_completion_with_a_sliding_window(class_pipe):
    image = random_image(6, size=(12 * FACTOR, 16 * FACTOR))
    given = class_pipe.encode_images(image)
    tokens = class_pipe(class_labels=2, image=image, keep_rows=4, height=12 * FACTOR, width=16 * FACTOR,
                        generator=seeded(), output_type="latent").images  # fmt: skip
    assert tokens.shape == (1, 12, 16)
    assert torch.equal(tokens[:, :4], given[:, :4])


# ----------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(class_labels=3), ValueError, r"\[0, 3\)"),  # 3 is the prior's null class, not a user class
        (dict(class_labels=[0, -1]), ValueError, r"\[0, 3\)"),
        (dict(class_labels=[]), ValueError, r"\[0, 3\)"),
        (dict(class_labels=[1.5]), TypeError, "integers"),
        (dict(), ValueError, "pass `class_labels`"),
        (dict(class_labels=0, top_k=0), ValueError, "top_k"),
        (dict(class_labels=0, top_k=-2), ValueError, "top_k"),
        (dict(class_labels=0, temperature=0.0), ValueError, "temperature"),
        (dict(class_labels=0, temperature=-1.0), ValueError, "temperature"),
        (dict(class_labels=0, top_p=0.0), ValueError, "top_p"),
        (dict(class_labels=0, top_p=1.5), ValueError, "top_p"),
        (dict(class_labels=0, output_type="jpeg"), ValueError, "output_type"),
        (dict(class_labels=0, num_images_per_prompt=0), ValueError, "num_images_per_prompt"),
        (dict(class_labels=0, height=15), ValueError, "multiple of the tokenizer's factor 2"),
        (dict(class_labels=0, height=4 * FACTOR), ValueError, "at least 8x8"),
        (dict(class_labels=0, image=random_image(0)), ValueError, "both `image` and `keep_rows`"),
        (dict(class_labels=0, image=random_image(0, size=(20, 20)), keep_rows=2), ValueError, "must be 16x16"),
        (dict(class_labels=0, image=random_image(0), keep_rows=GRID + 1), ValueError, "keep_rows"),
        (
            dict(class_labels=[0, 1, 2], image=[random_image(0), random_image(1)], keep_rows=1),
            ValueError,
            "batch of 3",
        ),
        (dict(class_labels=0, condition_image=random_image(0)), ValueError, "no condition tokenizer"),
    ],
)
def test_bad_arguments_of_a_class_conditional_pipeline(class_pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        class_pipe(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(class_labels=0), "unconditional"),
        (dict(guidance_scale=2.0), "guidance_scale"),
        (dict(batch_size=0), "batch_size"),
        (dict(image=random_image(0, mode="L"), keep_rows=2, height=12 * FACTOR), "must be 24x16"),
    ],
)
def test_bad_arguments_of_an_unconditional_pipeline(uncond_pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        uncond_pipe(**kwargs)


def test_errors_come_before_any_sampling(class_pipe):
    steps = []
    with pytest.raises(ValueError):
        class_pipe(class_labels=7, callback=lambda step, tokens: steps.append(step))
    assert steps == []


# ------------------------------------------------------------------------------------- image conditions
NUM_LABELS = 4


@pytest.fixture(scope="module")
def segmentation_pipe() -> VQGANTransformerPipeline:
    """A prior conditioned on the 64 codes of a one-hot segmentation map, tokenised by its own VQGAN."""
    pipe = sampling_pipeline(num_classes=0)
    config = vqgan_config(in_channels=NUM_LABELS, out_channels=NUM_LABELS, attention_resolutions=(), sample_size=SIZE,
                          codebook_size=16)  # fmt: skip
    cond_vqgan = tiny_vqgan(2, **config)
    prior = tiny_prior(None, codebook_size=CODEBOOK_SIZE, cond_codebook_size=16, cond_length=GRID * GRID,
                       condition_type="segmentation", cond_num_labels=NUM_LABELS, n_layer=2)  # fmt: skip
    return tiny_pipeline(pipe.vqgan, prior, cond_vqgan=cond_vqgan)


def label_map(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, NUM_LABELS, (SIZE, SIZE))


def test_condition_codes_reach_the_prior(segmentation_pipe):
    labels = label_map()
    tokens = segmentation_pipe(condition_image=labels, num_images_per_prompt=2, top_k=1, output_type="latent").images
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(labels), NUM_LABELS).permute(2, 0, 1)[None] * 2.0 - 1
    cond_codes = segmentation_pipe.cond_vqgan.tokenize(one_hot.float()).flatten(1)  # (1, 64)
    expected = segmentation_pipe.transformer.sample(cond_indices=cond_codes.expand(2, -1), top_k=1)
    assert torch.equal(tokens, expected)
    palette = PIL.Image.fromarray(labels.astype(np.uint8), mode="L")  # a label map saved as an image
    from_image = segmentation_pipe(condition_image=palette, top_k=1, output_type="latent").images
    assert torch.equal(from_image, expected[:1])


@pytest.mark.parametrize(
    "condition, match",
    [
        (None, "pass `condition_image`"),
        (np.full((SIZE, SIZE), NUM_LABELS), r"\[0, 4\)"),
        (np.zeros((SIZE + 2, SIZE), dtype=np.int64), r"shape \(16, 16\)"),
        (np.full((SIZE, SIZE), 0.5), "integer labels"),
    ],
)
def test_bad_condition_images(segmentation_pipe, condition, match):
    with pytest.raises(ValueError, match=match):
        segmentation_pipe(condition_image=condition)


def test_pipeline_with_a_condition_tokenizer_round_trips(segmentation_pipe, tmp_path):
    segmentation_pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["cond_vqgan"][1] == "VQGANModel"
    loaded = load_pipeline(tmp_path)
    assert isinstance(loaded.cond_vqgan, VQGANModel)
    kwargs = dict(condition_image=label_map(1), output_type="pt")
    expected = segmentation_pipe(**kwargs, generator=seeded(4)).images
    assert torch.equal(loaded(**kwargs, generator=seeded(4)).images, expected)
    card = str(loaded.model_card(repo_id="user/seg"))
    assert "`segmentation`" in card and "pipe(condition_image=condition" in card


# ---------------------------------------------------------------------------------------- saving and loading
@pytest.fixture(scope="module")
def saved_pipe(class_pipe, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pipe")
    class_pipe.save_pretrained(folder)
    return folder


def test_save_pretrained_writes_model_index_and_safetensors_components(saved_pipe):
    index = json.loads((saved_pipe / "model_index.json").read_text())
    # The generic loader imports the class through the module file named first (diffusers' custom pipelines).
    assert index["_class_name"] == ["pipeline_vqgan_transformer", "VQGANTransformerPipeline"]
    assert (
        "from hf_vqgan import VQGANTransformerPipeline" in (saved_pipe / "pipeline_vqgan_transformer.py").read_text()
    )
    assert index["vqgan"][1] == "VQGANModel" and index["transformer"][1] == "VQGANPriorForCausalLM"
    assert index["cond_vqgan"] == [None, None]
    assert index["image_processor"][1] == "VQGANImageProcessor" and index["condition_processor"] == [None, None]
    processor = json.loads((saved_pipe / "image_processor" / "preprocessor_config.json").read_text())
    assert processor["resolution"] == SIZE and processor["channels"] == 3 and processor["condition_type"] is None
    assert (saved_pipe / "vqgan" / "diffusion_pytorch_model.safetensors").is_file()
    assert (saved_pipe / "transformer" / "model.safetensors").is_file()
    assert not list(saved_pipe.rglob("*.bin")) and not list(saved_pipe.rglob("*.pt"))


def test_save_load_round_trip_gives_identical_samples(class_pipe, saved_pipe):
    loaded = load_pipeline(saved_pipe)
    assert loaded.cond_vqgan is None
    kwargs = dict(class_labels=[0, 2], top_k=20, guidance_scale=1.5, output_type="pt")
    expected = class_pipe(**kwargs, generator=seeded(5)).images
    assert torch.equal(loaded(**kwargs, generator=seeded(5)).images, expected)


def populate_hub_cache(cache: Path, repo_id: str, folder: Path) -> str:
    """Lay `folder` out as the Hugging Face cache holds a downloaded repo: snapshots/<commit>/..., refs/main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)  # no newline: the hub reads the file as the hash
    return commit


@pytest.fixture
def offline_hub_cache(tmp_path, saved_pipe, monkeypatch) -> Path:
    """A Hub cache holding `user/tiny-pipeline`, with the Hub unreachable."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    populate_hub_cache(cache, "user/tiny-pipeline", saved_pipe)
    # huggingface_hub reads both variables once, at import: the module constants are what its functions consult.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_from_pretrained_with_a_repo_id_reads_the_offline_cache(class_pipe, offline_hub_cache):
    from huggingface_hub.errors import LocalEntryNotFoundError

    loaded = load_pipeline("user/tiny-pipeline")
    assert Path(loaded.config._name_or_path).is_relative_to(offline_hub_cache)
    expected = class_pipe(class_labels=1, generator=seeded(2), output_type="latent").images
    assert torch.equal(loaded(class_labels=1, generator=seeded(2), output_type="latent").images, expected)
    with pytest.raises(LocalEntryNotFoundError):
        VQGANTransformerPipeline.from_pretrained("user/not-in-the-cache")


def test_converted_taming_pipeline_loads_and_samples(tmp_path):
    fixtures = taming_fixtures()
    from hf_vqgan.convert.taming import convert_taming_checkpoint

    folder = convert_taming_checkpoint(
        fixtures / "transformer_tiny_uncond.yaml", fixtures / "transformer_tiny_uncond.ckpt", tmp_path / "pipe"
    )
    pipe = load_pipeline(folder)
    size = pipe.latent_grid[0] * pipe.vqgan.downsample_factor
    tokens = pipe(batch_size=2, generator=seeded(), output_type="latent").images
    assert tokens.shape == (2, *pipe.latent_grid) and tokens.max() < pipe.vqgan.config.codebook_size
    images = pipe(batch_size=2, generator=seeded(), output_type="pt").images
    assert images.shape == (2, 3, size, size)
    assert torch.equal(images, pipe.decode_tokens(tokens, output_type="pt"))


# ----------------------------------------------------------------------------------------------------- sharing
@pytest.fixture
def intercepted_push(monkeypatch):
    """The Hub calls, recorded (tests/hub_recorder.py); `["upload"]` is the last upload with its file list and card."""
    from hub_recorder import record_hub_calls

    recorded = record_hub_calls(monkeypatch)

    class Calls(dict):
        def __getitem__(self, key):
            call = dict(recorded[key][-1])
            if key == "upload":
                call["readme"] = call["files"]["README.md"].decode() if "README.md" in call["files"] else None
                call["files"] = sorted(call["files"])
            return call

    return Calls()


def test_push_to_hub_uploads_components_and_a_rendered_card(class_pipe, intercepted_push):
    grid = PIL.Image.new("RGB", (8, 8))
    url = class_pipe.push_to_hub(
        "user/tiny-digits", private=True, datasets=["user/digits"], metrics={"val_loss": 1.23456}, sample_grid=grid
    )
    assert url == "https://huggingface.co/user/tiny-digits/commit/abc"
    assert intercepted_push["create_repo"]["repo_id"] == "user/tiny-digits"
    assert intercepted_push["create_repo"]["private"] is True
    upload = intercepted_push["upload"]
    assert {"model_index.json", "README.md", "samples.png"} <= set(upload["files"])
    assert "vqgan/diffusion_pytorch_model.safetensors" in upload["files"]
    assert "transformer/model.safetensors" in upload["files"]
    card = upload["readme"]
    assert "library_name: hf_vqgan" in card
    for tag in ("hf_vqgan", "image-generation", "autoregressive", "class-conditional"):
        assert f"- {tag}\n" in card
    assert "- user/digits" in card and "| val_loss | 1.235 |" in card
    assert 'VQGANTransformerPipeline.from_pretrained("user/tiny-digits")' in card
    assert "pipe(class_labels=" in card and "![samples](samples.png)" in card


def test_push_to_hub_reuses_the_card_and_grid_of_a_trained_folder(class_pipe, intercepted_push, tmp_path):
    folder = tmp_path / "trained"
    class_pipe.save_pretrained(folder)
    (folder / "README.md").write_text("---\nlibrary_name: hf_vqgan\n---\n# trained\n![samples](samples.png)\n")
    PIL.Image.new("RGB", (8, 8)).save(folder / "samples.png")
    for training_file in ("checkpoints/checkpoint-4/optimizer.bin", "logs/events.out", "checkpoint-2/model.bin"):
        (folder / training_file).parent.mkdir(parents=True, exist_ok=True)
        (folder / training_file).write_bytes(b"state")

    VQGANTransformerPipeline.from_pretrained(folder).push_to_hub("user/trained")
    upload = intercepted_push["upload"]
    assert upload["readme"].startswith("---\nlibrary_name: hf_vqgan\n---\n# trained")
    assert "samples.png" in upload["files"]  # the card's image link resolves on the Hub
    assert not [f for f in upload["files"] if "checkpoint" in f or f.startswith("logs")]


def test_unconditional_model_card_shows_a_batch_call(uncond_pipe):
    card = str(uncond_pipe.model_card(repo_id="user/uncond"))
    assert "pipe(batch_size=4" in card and "class_labels" not in card
    assert "pipeline_tag: unconditional-image-generation" in card and "class-conditional" not in card


# ----------------------------------------------------------------------------------------------------- offload
def test_offload_sequence_names_the_components():
    pipe = sampling_pipeline()
    sequence = VQGANTransformerPipeline.model_cpu_offload_seq.split("->")
    models = {name for name, component in pipe.components.items() if isinstance(component, torch.nn.Module)}
    assert (
        set(sequence)
        == {"vqgan", "transformer", "cond_vqgan"}
        == set(pipe.components)
        - {
            "image_processor",
            "condition_processor",
        }
    )
    assert models == {"vqgan", "transformer"}  # cond_vqgan is None here; the processors are no modules


def test_model_offload_hooks_leave_samples_unchanged():
    pytest.importorskip("accelerate")
    pipe = sampling_pipeline()
    expected = pipe(class_labels=[0, 1], generator=seeded(), output_type="pt").images
    # On a CPU-only machine the hooks can still be installed with "cpu" as the execution device.
    pipe.enable_model_cpu_offload(device="cpu")
    assert len(pipe._all_hooks) == 2
    assert torch.equal(pipe(class_labels=[0, 1], generator=seeded(), output_type="pt").images, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_cpu_offload_on_gpu():
    pytest.importorskip("accelerate")
    pipe = sampling_pipeline()
    pipe.enable_model_cpu_offload()
    images = pipe(class_labels=[0, 1], generator=seeded(), output_type="pt").images
    assert images.shape == (2, 3, SIZE, SIZE)
    # After the call the hooks have moved every model back to the CPU.
    assert pipe.transformer.device.type == "cpu" and pipe.vqgan.device.type == "cpu"


# ------------------------------------------------------------------------------- diffusers callback convention
def test_callback_on_step_end_sees_and_edits_the_tokens(class_pipe):
    seen = []

    def force_code_5_first(pipe, step, timestep, callback_kwargs):
        tokens = callback_kwargs["tokens"]
        seen.append((step, timestep, tuple(tokens.shape)))
        if step == 0:
            tokens = tokens.clone()
            tokens[:, 0] = 5
        return {"tokens": tokens}

    tokens = class_pipe(class_labels=[0, 1], generator=seeded(), output_type="latent",
                        callback_on_step_end=force_code_5_first,
                        callback_on_step_end_tensor_inputs=["tokens"]).images  # fmt: skip
    T = GRID * GRID
    assert seen == [(step, step, (2, step + 1)) for step in range(T)]
    assert (tokens[:, 0, 0] == 5).all()
    with pytest.raises(ValueError, match=r"\['latents'\]"):
        class_pipe(class_labels=0, callback_on_step_end=force_code_5_first,
                   callback_on_step_end_tensor_inputs=["latents"])  # fmt: skip


def test_interrupt_from_the_callback_stops_sampling(class_pipe):
    def stop_after_ten(pipe, step, timestep, callback_kwargs):
        if step == 9:
            pipe._interrupt = True
        return callback_kwargs

    tokens = class_pipe(class_labels=[0, 1], generator=seeded(), output_type="latent",
                        callback_on_step_end=stop_after_ten).images.reshape(2, -1)  # fmt: skip
    assert (tokens[:, :10] >= 0).all() and (tokens[:, 10:] == -1).all()
    images = class_pipe(class_labels=0, callback_on_step_end=stop_after_ten, output_type="pt").images
    assert images.shape == (1, 3, SIZE, SIZE)  # unsampled positions decode as code 0
    assert class_pipe.interrupt is True
    class_pipe(class_labels=0, output_type="latent")
    assert class_pipe.interrupt is False  # every call starts uninterrupted


def test_the_old_callback_still_works_with_a_deprecation_warning(class_pipe):
    steps = []
    with pytest.warns(FutureWarning, match="callback_on_step_end"):
        class_pipe(class_labels=0, output_type="latent", callback=lambda step, tokens: steps.append(step))
    assert steps == list(range(GRID * GRID))


# ------------------------------------------------------------------------------------------- generic loader
GENERIC_LOAD = """
import sys
from diffusers import DiffusionPipeline
assert "hf_vqgan" not in sys.modules
try:
    DiffusionPipeline.from_pretrained(sys.argv[1])
except ValueError as error:
    assert "trust_remote_code=True" in str(error), error
else:
    raise AssertionError("loaded custom code without trust_remote_code")
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
assert type(pipe).__name__ == "VQGANTransformerPipeline" and type(pipe).__module__.startswith("hf_vqgan.")
import torch
tokens = pipe(class_labels=1, generator=torch.Generator().manual_seed(2), output_type="latent").images
torch.save(tokens, sys.argv[2])
"""


def test_generic_diffusion_pipeline_loader_in_a_fresh_interpreter(class_pipe, saved_pipe, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "tokens.pt"
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", GENERIC_LOAD, str(saved_pipe), str(out)], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected = class_pipe(class_labels=1, generator=seeded(2), output_type="latent").images
    assert torch.equal(torch.load(out), expected)


def test_loading_with_the_class_never_runs_the_folder_module(class_pipe, tmp_path):
    """The module file is for the generic loader, and only with `trust_remote_code=True`; loading through the class
    (or the generic loader without trust) executes nothing from the folder."""
    from diffusers import DiffusionPipeline

    class_pipe.save_pretrained(tmp_path)
    (tmp_path / "pipeline_vqgan_transformer.py").write_text("raise SystemExit('folder code ran')\n")
    loaded = VQGANTransformerPipeline.from_pretrained(tmp_path)
    assert type(loaded) is VQGANTransformerPipeline
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(tmp_path)


def test_fast_decode_gives_the_same_images(class_pipe):
    kwargs = dict(class_labels=[1, 2], guidance_scale=2.0, output_type="latent")
    plain = class_pipe(**kwargs, generator=seeded(0)).images
    class_pipe.enable_fast_decode(mode="eager")
    try:
        assert class_pipe.fast_decode_step is not None
        fast = class_pipe(**kwargs, generator=seeded(0)).images
    finally:
        class_pipe.disable_fast_decode()
    assert class_pipe.fast_decode_step is None
    assert torch.equal(fast, plain)
    assert torch.equal(class_pipe(**kwargs, generator=seeded(0)).images, plain)


# ------------------------------------------------------------------------------------------------ bad inputs
# One row per bad input: (id, call, exception type, regex the message must match). Each regex names the bad value
# (or the option) and the expectation, so an error raised for another reason, or one that says less, fails.
@pytest.fixture(scope="module")
def error_pipes(tmp_path_factory) -> dict:
    """`pipe` (3 classes) and `unconditional_pipe` over one `error_vqgan_config()` tokenizer; `tmp`, a folder."""
    vqgan = tiny_vqgan(**error_vqgan_config())
    return dict(
        pipe=tiny_pipeline(vqgan, tiny_prior(0, **error_prior_config(num_classes=3))),
        unconditional_pipe=tiny_pipeline(vqgan, tiny_prior(0, **error_prior_config())),
        tmp=tmp_path_factory.mktemp("outputs"),
    )


# fmt: off
ERROR_CASES = [
    ("output_type", lambda o: o["pipe"](class_labels=0, output_type="jpg"), ValueError, r"`output_type` must be one of \('pil', 'np', 'pt', 'latent'\), got 'jpg'"),
    ("num_images_per_prompt=0", lambda o: o["pipe"](class_labels=0, num_images_per_prompt=0), ValueError, r"`num_images_per_prompt` must be a positive int, got 0"),
    ("batch_size str", lambda o: o["unconditional_pipe"](batch_size="2"), ValueError, r"`batch_size` must be a positive int, got '2'"),
    ("batch_size=0", lambda o: o["unconditional_pipe"](batch_size=0), ValueError, r"`batch_size` must be a positive int, got 0"),
    ("temperature<0", lambda o: o["pipe"](class_labels=0, temperature=-1.0), ValueError, r"`temperature` must be a positive finite number, got -1\.0"),
    ("top_k float", lambda o: o["pipe"](class_labels=0, top_k=2.5), ValueError, r"`top_k` must be None or an integer >= 1, got 2\.5"),
    ("top_p=0", lambda o: o["pipe"](class_labels=0, top_p=0.0), ValueError, r"`top_p` must be None or a number in \(0, 1\], got 0\.0"),
    ("guidance on unconditional", lambda o: o["unconditional_pipe"](guidance_scale=3.0), ValueError, r"`guidance_scale`=3\.0 needs a class-conditional prior"),
    ("labels on unconditional", lambda o: o["unconditional_pipe"](class_labels=[1]), ValueError, r"`class_labels`=\[1\] given, but this prior is unconditional"),
    ("labels missing", lambda o: o["pipe"](), ValueError, r"class-conditional \(3 classes\): pass `class_labels`"),
    ("label out of range", lambda o: o["pipe"](class_labels=[0, 5]), ValueError, r"`class_labels` must lie in \[0, 3\), got \[0, 5\]"),
    ("labels empty", lambda o: o["pipe"](class_labels=[]), ValueError, r"`class_labels` must lie in \[0, 3\), got \[\]"),
    ("labels float", lambda o: o["pipe"](class_labels=[1.5]), TypeError, r"`class_labels` must be integers, got \[1\.5\]"),
    ("height indivisible", lambda o: o["pipe"](class_labels=0, height=9), ValueError, r"`height` must be a positive multiple of the tokenizer's factor 2, got 9"),
    ("width zero", lambda o: o["pipe"](class_labels=0, width=0), ValueError, r"`width` must be a positive multiple of the tokenizer's factor 2, got 0"),
    ("image without keep_rows", lambda o: o["pipe"](class_labels=0, image=torch.zeros(1, 3, 8, 8)), ValueError, r"Image completion needs both `image` and `keep_rows`"),
    ("keep_rows too large", lambda o: o["pipe"](class_labels=0, image=torch.zeros(1, 3, 8, 8), keep_rows=5), ValueError, r"`keep_rows` must be an int in \[0, 4\] \(token rows\), got 5"),
    ("completion image size", lambda o: o["pipe"](class_labels=0, image=torch.zeros(1, 3, 6, 6), keep_rows=1), ValueError, r"must be 8x8 pixels \(the output size\), got 6x6"),
    ("completion image channels", lambda o: o["pipe"](class_labels=0, image=torch.zeros(1, 1, 8, 8), keep_rows=1), ValueError, r"`image` must have shape \(batch, 3, height, width\), got \(1, 1, 8, 8\)"),
    ("completion image type", lambda o: o["pipe"](class_labels=0, image="digit.png", keep_rows=1), TypeError, r"`image` must be a PIL image, a list of them, a numpy array or a tensor; got str"),
    ("condition without cond_vqgan", lambda o: o["pipe"](class_labels=0, condition_image=torch.zeros(1, 3, 8, 8)), ValueError, r"`condition_image` was given, but this pipeline has no condition tokenizer"),
    ("generator wrong type", lambda o: o["pipe"](class_labels=0, generator=0), TypeError, r"`generator` must be a torch\.Generator or None, got int"),
    ("decode_tokens latent", lambda o: o["pipe"].decode_tokens(torch.zeros(1, 4, 4, dtype=torch.long), output_type="latent"), ValueError, r"`output_type` must be one of 'pil', 'np', 'pt' for decoded images, got 'latent'"),
    ("decode_tokens out of range", lambda o: o["pipe"].decode_tokens(torch.full((1, 4, 4), 64)), ValueError, r"`indices` must lie in \[0, 64\)"),
    ("decode_tokens a list", lambda o: o["pipe"].decode_tokens([[[0]]]), TypeError, r"`indices` must be a torch\.Tensor, got list"),
    ("encode_images of mixed sizes", lambda o: o["pipe"].encode_images([PIL.Image.new("RGB", (8, 8)), PIL.Image.new("RGB", (4, 4))]), ValueError, r"All `image` images must have the same size, got \[\(4, 4, 3\), \(8, 8, 3\)\]"),
    ("from_pretrained missing folder", lambda o: VQGANTransformerPipeline.from_pretrained(o["tmp"] / "missing"), FileNotFoundError, r"No pipeline folder at '.*missing': expected a directory holding model_index\.json, or a Hub repo id"),
]
# fmt: on


@pytest.mark.parametrize("call, error, message", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_bad_inputs_get_errors_that_name_them(error_pipes, call, error, message):
    with pytest.raises(error, match=message):
        call(error_pipes)
