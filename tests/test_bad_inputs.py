"""Bad input to every public entry point (issue 9): wrong types, shapes, ranges, dtypes, devices, empty inputs and
contradictory options each get an error that names the offending value and what was expected.

One table per entry point: `(id, call, exception type, regex the message must match)`. Each regex names the bad value
(or the option) and the expectation, so an error that is raised for another reason, or that says less, fails.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vqgan import (
    VQGANImageProcessor,
    VQGANModel,
    VQGANPriorConfig,
    VQGANPriorForCausalLM,
    VQGANTransformerPipeline,
)
from hf_vqgan.models.quantizer import VectorQuantizer

TINY_VQGAN = dict(in_channels=3, out_channels=3, base_channels=32, channel_multipliers=(1, 2), num_res_blocks=1,
                  attention_resolutions=(), sample_size=8, latent_channels=16, code_dim=8, codebook_size=64,
                  norm_num_groups=8)  # fmt: skip
PRIOR = dict(codebook_size=64, latent_height=4, latent_width=4, n_embd=16, n_layer=1, n_head=2)


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    """Tiny instances of every public class, and a saved pipeline folder, shared by the tables below."""
    torch.manual_seed(0)
    vqgan = VQGANModel(**TINY_VQGAN).eval()
    conditional = VQGANPriorForCausalLM(VQGANPriorConfig(**PRIOR, num_classes=3)).eval()
    unconditional = VQGANPriorForCausalLM(VQGANPriorConfig(**PRIOR)).eval()
    pipe = VQGANTransformerPipeline(vqgan=vqgan, transformer=conditional)
    pipe.set_progress_bar_config(disable=True)
    folder = tmp_path_factory.mktemp("pipeline")
    pipe.save_pretrained(folder)
    image = tmp_path_factory.mktemp("images") / "digit.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    return dict(
        vqgan=vqgan,
        quantizer=VectorQuantizer(16, 4).train(),
        prior=conditional,
        unconditional=unconditional,
        pipe=pipe,
        unconditional_pipe=VQGANTransformerPipeline(vqgan=vqgan, transformer=unconditional),
        folder=folder,
        image=image,
        tmp=tmp_path_factory.mktemp("outputs"),
    )


def check(objects, call, error, message):
    with pytest.raises(error, match=message):
        call(objects)


def pixels(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


# ------------------------------------------------------------------------------------------------- VQGANModel
# fmt: off
VQGAN_CASES = [
    ("config in_channels=0", lambda o: VQGANModel(**{**TINY_VQGAN, "in_channels": 0}), ValueError, r"`in_channels` must be a positive int, got 0"),
    ("config in_channels=True", lambda o: VQGANModel(**{**TINY_VQGAN, "in_channels": True}), ValueError, r"`in_channels` must be a positive int, got True"),
    ("config in_channels=3.0", lambda o: VQGANModel(**{**TINY_VQGAN, "in_channels": 3.0}), ValueError, r"`in_channels` must be a positive int, got 3\.0"),
    ("config empty multipliers", lambda o: VQGANModel(**{**TINY_VQGAN, "channel_multipliers": ()}), ValueError, r"`channel_multipliers` must be a non-empty list of positive ints, got \(\)"),
    ("config zero multiplier", lambda o: VQGANModel(**{**TINY_VQGAN, "channel_multipliers": (1, 0)}), ValueError, r"`channel_multipliers` must hold positive ints, got \(1, 0\)"),
    ("config attention as str", lambda o: VQGANModel(**{**TINY_VQGAN, "attention_resolutions": "16"}), ValueError, r"`attention_resolutions` must be a list of positive ints, got '16'"),
    ("config dropout=1.5", lambda o: VQGANModel(**{**TINY_VQGAN, "dropout": 1.5}), ValueError, r"`dropout` must be in \[0, 1\), got 1\.5"),
    ("config groups do not divide", lambda o: VQGANModel(**{**TINY_VQGAN, "norm_num_groups": 7}), ValueError, r"divisible by `norm_num_groups`=7.*width 32"),
    ("config sample_size indivisible", lambda o: VQGANModel(**{**TINY_VQGAN, "sample_size": 9}), ValueError, r"`sample_size`=9 must be divisible by the downsampling factor 2"),
    ("config codebook_size=1", lambda o: VQGANModel(**{**TINY_VQGAN, "codebook_size": 1}), ValueError, r"`codebook_size` must be an int >= 2, got 1"),
    ("config code_dim=0", lambda o: VQGANModel(**{**TINY_VQGAN, "code_dim": 0}), ValueError, r"`code_dim` must be a positive int, got 0"),
    ("config commitment_beta<0", lambda o: VQGANModel(**{**TINY_VQGAN, "commitment_beta": -1.0}), ValueError, r"`beta` must be >= 0, got -1\.0"),
    ("config ema_decay=1", lambda o: VQGANModel(**{**TINY_VQGAN, "use_ema": True, "ema_decay": 1.0}), ValueError, r"`ema_decay` must be in \(0, 1\), got 1\.0"),
    ("config dead_code_steps<0", lambda o: VQGANModel(**{**TINY_VQGAN, "dead_code_steps": -1}), ValueError, r"`dead_code_steps` must be >= 0 .*got -1"),
    ("encode a list", lambda o: o["vqgan"].encode([[0.0]]), TypeError, r"`pixel_values` must be a torch\.Tensor, got list"),
    ("encode a numpy array", lambda o: o["vqgan"].encode(np.zeros((1, 3, 8, 8), np.float32)), TypeError, r"`pixel_values` must be a torch\.Tensor, got ndarray"),
    ("encode 3-D", lambda o: o["vqgan"].encode(pixels(3, 8, 8)), ValueError, r"`pixel_values` must be a 4-D tensor \(batch_size, channels, height, width\), got shape \(3, 8, 8\)"),
    ("encode wrong channels", lambda o: o["vqgan"].encode(pixels(1, 1, 8, 8)), ValueError, r"`pixel_values` has 1 channels, but this model expects 3"),
    ("encode uint8", lambda o: o["vqgan"].encode(pixels(1, 3, 8, 8, dtype=torch.uint8)), TypeError, r"floating-point tensor in \[-1, 1\], got dtype torch\.uint8"),
    ("encode indivisible size", lambda o: o["vqgan"].encode(pixels(1, 3, 9, 8)), ValueError, r"multiples of the downsampling factor 2, got 9x8"),
    ("encode zero size", lambda o: o["vqgan"].encode(pixels(1, 3, 0, 8)), ValueError, r"positive multiples of the downsampling factor 2, got 0x8"),
    ("encode empty batch", lambda o: o["vqgan"].encode(pixels(0, 3, 8, 8)), ValueError, r"`pixel_values` is an empty batch \(shape \(0, 3, 8, 8\)\)"),
    # A device mismatch is reported by torch itself, naming both devices.
    ("encode other device", lambda o: o["vqgan"].encode(pixels(1, 3, 8, 8).to("meta")), RuntimeError, r"device cpu is not on the expected device meta"),
    ("forward 3-D", lambda o: o["vqgan"](pixels(3, 8, 8)), ValueError, r"got shape \(3, 8, 8\)"),
    ("tokenize int64", lambda o: o["vqgan"].tokenize(pixels(1, 3, 8, 8, dtype=torch.int64)), TypeError, r"got dtype torch\.int64"),
    ("quantize a list", lambda o: o["vqgan"].quantize([0.0]), TypeError, r"`latents` must be a torch\.Tensor, got list"),
    ("quantize wrong code_dim", lambda o: o["vqgan"].quantize(pixels(1, 3, 4, 4)), ValueError, r"Expected latents of shape \(batch_size, 8, h, w\), got \(1, 3, 4, 4\)"),
    ("decode a list", lambda o: o["vqgan"].decode([0.0]), ValueError, r"`quantized` must have shape \(batch_size, 8, h, w\), got list"),
    ("decode wrong channels", lambda o: o["vqgan"].decode(pixels(1, 3, 4, 4)), ValueError, r"`quantized` must have shape \(batch_size, 8, h, w\), got \(1, 3, 4, 4\)"),
    ("decode_indices float", lambda o: o["vqgan"].decode_indices(pixels(1, 4, 4)), TypeError, r"`indices` must be an integer tensor, got dtype torch\.float32"),
    ("decode_indices bool", lambda o: o["vqgan"].decode_indices(torch.zeros(1, 4, 4, dtype=torch.bool)), TypeError, r"got dtype torch\.bool"),
    ("decode_indices 2-D", lambda o: o["vqgan"].decode_indices(torch.zeros(1, 16, dtype=torch.long)), ValueError, r"`indices` must have shape \(batch_size, h, w\), got \(1, 16\)"),
    ("decode_indices too large", lambda o: o["vqgan"].decode_indices(torch.full((1, 4, 4), 64)), ValueError, r"`indices` must lie in \[0, 64\), got values in \[64, 64\]"),
    ("decode_indices negative", lambda o: o["vqgan"].decode_indices(torch.full((1, 4, 4), -1)), ValueError, r"must lie in \[0, 64\), got values in \[-1, -1\]"),
    ("decode_indices a list", lambda o: o["vqgan"].decode_indices([[[0]]]), TypeError, r"`indices` must be a torch\.Tensor, got list"),
    ("latent_shape indivisible", lambda o: o["vqgan"].latent_shape(9, 8), ValueError, r"height and width must be positive multiples of the downsampling factor 2, got 9x8"),
    ("forward empty batch", lambda o: o["vqgan"](pixels(0, 3, 8, 8)), ValueError, r"`pixel_values` is an empty batch"),
]
# fmt: on


@pytest.mark.parametrize("call, error, message", [c[1:] for c in VQGAN_CASES], ids=[c[0] for c in VQGAN_CASES])
def test_vqgan_model(objects, call, error, message):
    check(objects, call, error, message)


# -------------------------------------------------------------------------------------------- VectorQuantizer
# fmt: off
QUANTIZER_CASES = [
    ("codebook_size=1", lambda o: VectorQuantizer(1, 4), ValueError, r"`codebook_size` must be an int >= 2, got 1"),
    ("codebook_size float", lambda o: VectorQuantizer(16.0, 4), ValueError, r"`codebook_size` must be an int >= 2, got 16\.0"),
    ("code_dim=0", lambda o: VectorQuantizer(16, 0), ValueError, r"`code_dim` must be a positive int, got 0"),
    ("beta<0", lambda o: VectorQuantizer(16, 4, beta=-0.5), ValueError, r"`beta` must be >= 0, got -0\.5"),
    ("ema_decay=0", lambda o: VectorQuantizer(16, 4, ema_decay=0.0), ValueError, r"`ema_decay` must be in \(0, 1\), got 0\.0"),
    ("dead_code_steps<0", lambda o: VectorQuantizer(16, 4, dead_code_steps=-2), ValueError, r"got -2"),
    ("usage_window=0", lambda o: VectorQuantizer(16, 4, usage_window=0), ValueError, r"`usage_window` must be >= 1, got 0"),
    ("forward a list", lambda o: o["quantizer"]([0.0]), TypeError, r"`latents` must be a torch\.Tensor, got list"),
    ("forward 3-D", lambda o: o["quantizer"](pixels(4, 2, 2)), ValueError, r"Expected latents of shape \(batch_size, 4, h, w\), got \(4, 2, 2\)"),
    ("forward wrong code_dim", lambda o: o["quantizer"](pixels(1, 3, 2, 2)), ValueError, r"got \(1, 3, 2, 2\)"),
    ("forward int64", lambda o: o["quantizer"](pixels(1, 4, 2, 2, dtype=torch.int64)), TypeError, r"`latents` must be a floating-point tensor, got dtype torch\.int64"),
    ("forward empty batch", lambda o: o["quantizer"](pixels(0, 4, 2, 2)), ValueError, r"`latents` is empty \(shape \(0, 4, 2, 2\)\)"),
    ("lookup float", lambda o: o["quantizer"].lookup(pixels(1, 2, 2)), TypeError, r"`indices` must be an integer tensor, got dtype torch\.float32"),
    ("lookup 2-D", lambda o: o["quantizer"].lookup(torch.zeros(1, 4, dtype=torch.long)), ValueError, r"`indices` must have shape \(batch_size, h, w\), got \(1, 4\)"),
    ("lookup out of range", lambda o: o["quantizer"].lookup(torch.full((1, 2, 2), 16)), ValueError, r"`indices` must lie in \[0, 16\), got values in \[16, 16\]"),
    ("statistics missing key", lambda o: o["quantizer"].load_statistics_state_dict({"usage_step": torch.zeros((), dtype=torch.long)}), ValueError, r"missing \['steps_since_used', 'usage_history'\]"),
    ("statistics wrong shape", lambda o: o["quantizer"].load_statistics_state_dict({**o["quantizer"].statistics_state_dict(), "usage_history": torch.zeros(3, 16)}), ValueError, r"`usage_history` has shape \(3, 16\), expected \(100, 16\)"),
]
# fmt: on


@pytest.mark.parametrize("call, error, message", [c[1:] for c in QUANTIZER_CASES], ids=[c[0] for c in QUANTIZER_CASES])
def test_vector_quantizer(objects, call, error, message):
    check(objects, call, error, message)


# ----------------------------------------------------------------------------------------------------- prior
def long(*values):
    return torch.tensor(values, dtype=torch.long)


# fmt: off
PRIOR_CASES = [
    ("config codebook_size=0", lambda o: VQGANPriorConfig(**{**PRIOR, "codebook_size": 0}), ValueError, r"`codebook_size` must be a positive integer, got 0"),
    ("config codebook_size str", lambda o: VQGANPriorConfig(**{**PRIOR, "codebook_size": "64"}), ValueError, r"`codebook_size` must be a positive integer, got '64'"),
    ("config num_classes float", lambda o: VQGANPriorConfig(**PRIOR, num_classes=2.5), ValueError, r"`num_classes` must be a non-negative integer, got 2\.5"),
    ("config num_classes<0", lambda o: VQGANPriorConfig(**PRIOR, num_classes=-1), ValueError, r"`num_classes` must be a non-negative integer, got -1"),
    ("config cond without length", lambda o: VQGANPriorConfig(**PRIOR, cond_codebook_size=8), ValueError, r"`cond_codebook_size` \(8\) and `cond_length` \(0\) must be both positive"),
    ("processor condition_type", lambda o: VQGANImageProcessor(condition_type="sketch"), ValueError, r"Unknown condition type 'sketch'; expected one of"),
    ("config heads", lambda o: VQGANPriorConfig(**{**PRIOR, "n_head": 3}), ValueError, r"`n_embd` \(16\) must be divisible by `n_head` \(3\)"),
    ("config dropout", lambda o: VQGANPriorConfig(**PRIOR, attn_pdrop=1.0), ValueError, r"`attn_pdrop` must be a probability in \[0, 1\), got 1\.0"),
    ("config vocab_size", lambda o: VQGANPriorConfig(**PRIOR, vocab_size=10), ValueError, r"must be 65 \(or left unset\), got 10"),
    ("config n_positions", lambda o: VQGANPriorConfig(**PRIOR, n_positions=4), ValueError, r"`n_positions` must hold a whole sequence of .* = 17 tokens, got 4"),
    ("build float indices", lambda o: o["prior"].build_input_ids(pixels(1, 4, 4), class_labels=long(0)), TypeError, r"`indices` must be an integer tensor, got dtype torch\.float32"),
    ("build indices out of range", lambda o: o["prior"].build_input_ids(torch.full((1, 4, 4), 64), class_labels=long(0)), ValueError, r"`indices` must lie in \[0, 64\), got values in \[64, 64\]"),
    ("build wrong grid", lambda o: o["prior"].build_input_ids(torch.zeros(1, 3, 4, dtype=torch.long), class_labels=long(0)), ValueError, r"`indices` must have shape \(batch_size, 4, 4\), got \(1, 3, 4\)"),
    ("build too many tokens", lambda o: o["prior"].build_input_ids(torch.zeros(1, 17, dtype=torch.long), class_labels=long(0)), ValueError, r"T <= 16, got \(1, 17\)"),
    ("build missing class", lambda o: o["prior"].build_input_ids(torch.zeros(1, 4, 4, dtype=torch.long)), ValueError, r"class-conditional \(`num_classes=3`\): pass `class_labels`"),
    ("build class out of range", lambda o: o["prior"].build_input_ids(class_labels=long(4)), ValueError, r"`class_labels` must lie in \[0, 4\), got values in \[4, 4\]"),
    ("build class as list", lambda o: o["prior"].build_input_ids(class_labels=[0]), TypeError, r"`class_labels` must be a torch\.Tensor, got list"),
    ("build class on unconditional", lambda o: o["unconditional"].build_input_ids(class_labels=long(0)), ValueError, r"`class_labels` were given, but this prior is unconditional"),
    ("build batch mismatch", lambda o: o["prior"].build_input_ids(torch.zeros(2, 4, 4, dtype=torch.long), class_labels=long(0)), ValueError, r"All inputs must share one batch size, got \{'batch_size': 2, 'class_labels': 1\}"),
    ("build batch_size=0", lambda o: o["unconditional"].build_input_ids(batch_size=0), ValueError, r"`batch_size` must be a positive integer, got 0"),
    ("build batch_size str", lambda o: o["unconditional"].build_input_ids(batch_size="2"), ValueError, r"`batch_size` must be a positive integer, got '2'"),
    ("build no batch", lambda o: o["unconditional"].build_input_ids(), ValueError, r"Cannot tell the batch size: pass `batch_size`"),
    ("sample temperature=0", lambda o: o["prior"].sample(class_labels=long(0), temperature=0.0), ValueError, r"`temperature` must be a positive finite number, got 0\.0"),
    ("sample temperature nan", lambda o: o["prior"].sample(class_labels=long(0), temperature=float("nan")), ValueError, r"`temperature` must be a positive finite number, got nan"),
    ("sample top_k=0", lambda o: o["prior"].sample(class_labels=long(0), top_k=0), ValueError, r"`top_k` must be None or an integer >= 1, got 0"),
    ("sample top_k=True", lambda o: o["prior"].sample(class_labels=long(0), top_k=True), ValueError, r"got True"),
    ("sample top_p=1.5", lambda o: o["prior"].sample(class_labels=long(0), top_p=1.5), ValueError, r"`top_p` must be None or a number in \(0, 1\], got 1\.5"),
    ("sample guidance<0", lambda o: o["prior"].sample(class_labels=long(0), guidance_scale=-1.0), ValueError, r"`guidance_scale` must be a non-negative finite number, got -1\.0"),
    ("sample guidance unconditional", lambda o: o["unconditional"].sample(batch_size=1, guidance_scale=2.0), ValueError, r"`guidance_scale=2\.0` needs a null class, but this prior has no classes"),
    ("sample decode_step str", lambda o: o["prior"].sample(class_labels=long(0), decode_step="static"), TypeError, r"`decode_step` must be a DecodeStep or None, got str"),
    ("sample 3-D prefix", lambda o: o["unconditional"].sample(prefix_indices=torch.zeros(1, 2, 2, dtype=torch.long)), ValueError, r"`prefix_indices` must have shape \(batch_size, k\), got \(1, 2, 2\)"),
    ("sample prefix out of range", lambda o: o["unconditional"].sample(prefix_indices=torch.full((1, 2), 99)), ValueError, r"must lie in \[0, 64\), got values in \[99, 99\]"),
    ("sample generator wrong type", lambda o: o["prior"].sample(class_labels=long(0), generator=0), TypeError, r"`generator` must be a torch\.Generator or None, got int"),
    ("pkeep out of range", lambda o: o["prior"].corrupt_image_tokens(long(0).reshape(1, 1), 1.5), ValueError, r"`pkeep` must be a probability in \[0, 1\], got 1\.5"),
    ("class dropout out of range", lambda o: o["prior"].drop_class_labels(long(0), 2.0), ValueError, r"`prob` must be a probability in \[0, 1\], got 2\.0"),
    ("class dropout unconditional", lambda o: o["unconditional"].drop_class_labels(long(0), 0.1), ValueError, r"needs a class-conditional prior, but `num_classes=0`"),
    ("forward past n_positions", lambda o: o["unconditional"](input_ids=torch.zeros(1, 18, dtype=torch.long)), ValueError, r"needs 18 positions, but the prior has n_positions=17"),
    ("build negative class", lambda o: o["prior"].build_input_ids(class_labels=long(-1)), ValueError, r"`class_labels` must lie in \[0, 4\), got values in \[-1, -1\]"),
    ("generate out-of-vocab ids", lambda o: o["prior"].generate(long(69).reshape(1, 1), max_new_tokens=1, do_sample=False), ValueError, r"`input_ids` must lie in \[0, 69\), got values in \[69, 69\]"),
]
# fmt: on


@pytest.mark.parametrize("call, error, message", [c[1:] for c in PRIOR_CASES], ids=[c[0] for c in PRIOR_CASES])
def test_prior(objects, call, error, message):
    check(objects, call, error, message)


# -------------------------------------------------------------------------------------------------- pipeline
# fmt: off
PIPELINE_CASES = [
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
    ("image without keep_rows", lambda o: o["pipe"](class_labels=0, image=pixels(1, 3, 8, 8)), ValueError, r"Image completion needs both `image` and `keep_rows`"),
    ("keep_rows too large", lambda o: o["pipe"](class_labels=0, image=pixels(1, 3, 8, 8), keep_rows=5), ValueError, r"`keep_rows` must be an int in \[0, 4\] \(token rows\), got 5"),
    ("completion image size", lambda o: o["pipe"](class_labels=0, image=pixels(1, 3, 6, 6), keep_rows=1), ValueError, r"must be 8x8 pixels \(the output size\), got 6x6"),
    ("completion image channels", lambda o: o["pipe"](class_labels=0, image=pixels(1, 1, 8, 8), keep_rows=1), ValueError, r"`image` must have shape \(batch, 3, height, width\), got \(1, 1, 8, 8\)"),
    ("completion image type", lambda o: o["pipe"](class_labels=0, image="digit.png", keep_rows=1), TypeError, r"`image` must be a PIL image, a list of them, a numpy array or a tensor; got str"),
    ("condition without cond_vqgan", lambda o: o["pipe"](class_labels=0, condition_image=pixels(1, 3, 8, 8)), ValueError, r"`condition_image` was given, but this pipeline has no condition tokenizer"),
    ("generator wrong type", lambda o: o["pipe"](class_labels=0, generator=0), TypeError, r"`generator` must be a torch\.Generator or None, got int"),
    ("decode_tokens latent", lambda o: o["pipe"].decode_tokens(torch.zeros(1, 4, 4, dtype=torch.long), output_type="latent"), ValueError, r"`output_type` must be one of 'pil', 'np', 'pt' for decoded images, got 'latent'"),
    ("decode_tokens out of range", lambda o: o["pipe"].decode_tokens(torch.full((1, 4, 4), 64)), ValueError, r"`indices` must lie in \[0, 64\)"),
    ("decode_tokens a list", lambda o: o["pipe"].decode_tokens([[[0]]]), TypeError, r"`indices` must be a torch\.Tensor, got list"),
    ("encode_images of mixed sizes", lambda o: o["pipe"].encode_images([Image.new("RGB", (8, 8)), Image.new("RGB", (4, 4))]), ValueError, r"All `image` images must have the same size, got \[\(4, 4, 3\), \(8, 8, 3\)\]"),
    ("from_pretrained missing folder", lambda o: VQGANTransformerPipeline.from_pretrained(o["tmp"] / "missing"), FileNotFoundError, r"No pipeline folder at '.*missing': expected a directory holding model_index\.json, or a Hub repo id"),
]
# fmt: on


@pytest.mark.parametrize("call, error, message", [c[1:] for c in PIPELINE_CASES], ids=[c[0] for c in PIPELINE_CASES])
def test_pipeline(objects, call, error, message):
    check(objects, call, error, message)


# --------------------------------------------------------------------------------------------- hf-vqgan CLI
def cli(*argv):
    from hf_vqgan.cli import main

    return lambda o: main([str(a).format(**{k: v for k, v in o.items() if isinstance(v, Path)}) for a in argv])


# fmt: off
CLI_CASES = [
    ("sample missing model", cli("sample", "--model", "{tmp}/missing", "--output", "{tmp}/g.png"), r"No pipeline folder at '.*missing'"),
    ("sample num-images 0", cli("sample", "--model", "{folder}", "--class-label", "0", "--num-images", "0", "--output", "{tmp}/g.png"), r"`num_images_per_prompt` must be a positive int, got 0"),
    ("sample class out of range", cli("sample", "--model", "{folder}", "--class-label", "7", "--output", "{tmp}/g.png"), r"`class_labels` must lie in \[0, 3\), got \[7\]"),
    ("sample temperature 0", cli("sample", "--model", "{folder}", "--class-label", "0", "--temperature", "0", "--output", "{tmp}/g.png"), r"`temperature` must be a positive finite number, got 0\.0"),
    ("sample top-p 2", cli("sample", "--model", "{folder}", "--class-label", "0", "--top-p", "2", "--output", "{tmp}/g.png"), r"`top_p` must be None or a number in \(0, 1\], got 2\.0"),
    ("sample missing class", cli("sample", "--model", "{folder}", "--output", "{tmp}/g.png"), r"pass `class_labels`"),
    ("sample missing condition image", cli("sample", "--model", "{folder}", "--class-label", "0", "--condition-image", "{tmp}/none.png", "--output", "{tmp}/g.png"), r"No image file at '.*none\.png'"),
    ("reconstruct missing input", cli("reconstruct", "--model", "{folder}", "--input", "{tmp}/none.png", "--output", "{tmp}/r.png"), r"No image file at '.*none\.png'"),
    ("reconstruct indivisible resolution", cli("reconstruct", "--model", "{folder}", "--input", "{image}", "--resolution", "9", "--output", "{tmp}/r.png"), r"multiples of the downsampling factor 2, got 9x9"),
    ("reconstruct not an image", cli("reconstruct", "--model", "{folder}", "--input", "{folder}/model_index.json", "--output", "{tmp}/r.png"), r"cannot identify image file '.*model_index\.json'"),
    ("convert-diffusers missing input", cli("convert-diffusers", "--input", "{tmp}/missing", "--output", "{tmp}/out", "--to", "vqmodel"), r"No model folder at '.*missing': expected a directory holding config\.json"),
    ("convert-taming missing checkpoint", cli("convert-taming", "--config", "{tmp}/missing.yaml", "--checkpoint", "{tmp}/missing.ckpt", "--output", "{tmp}/out"), r"hf-vqgan convert-taming: error: .*missing\.(yaml|ckpt)"),
]
# fmt: on


@pytest.mark.parametrize("call, message", [(c[1], c[2]) for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_errors_exit_2_with_a_message(objects, capsys, call, message):
    assert call(objects) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after loading progress bars, one line
    assert last.startswith("hf-vqgan ") and ": error: " in last and re.search(message, last), err


# fmt: off
CLI_PARSER_CASES = [
    ("no --to", ["convert-diffusers", "--input", "a", "--output", "b"], r"the following arguments are required: --to"),
    ("bad --to", ["convert-diffusers", "--input", "a", "--output", "b", "--to", "onnx"], r"argument --to: invalid choice: 'onnx' \(choose from '?vqmodel'?, '?hf_vqgan'?\)"),
    ("non-integer --num-images", ["sample", "--model", "m", "--output", "o", "--num-images", "two"], r"argument --num-images: invalid int value: 'two'"),
    ("unknown command", ["train"], r"argument COMMAND: invalid choice: 'train'"),
]
# fmt: on


@pytest.mark.parametrize("argv, message", [c[1:] for c in CLI_PARSER_CASES], ids=[c[0] for c in CLI_PARSER_CASES])
def test_cli_parser_errors(capsys, argv, message):
    from hf_vqgan.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


# ------------------------------------------------------------------------------------ examples/train.py options
@pytest.fixture(scope="module")
def train_main():
    path = Path(__file__).resolve().parents[1] / "examples" / "train.py"
    spec = importlib.util.spec_from_file_location("hf_vqgan_train_bad_inputs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


# fmt: off
TRAIN_CONTRADICTIONS = [
    ("dataset and folder", ["vqgan", "--dataset_name", "d", "--train_data_dir", "f"], r"Pass either --dataset_name \('d'\) or --train_data_dir \('f'\), not both"),
    ("push without id", ["vqgan", "--push_to_hub"], r"--push_to_hub needs --hub_model_id"),
    ("ema_decay 1.5", ["vqgan", "--ema_decay", "1.5"], r"--ema_decay must be in \(0, 1\), got 1\.5"),
    ("learning_rate 0", ["vqgan", "--learning_rate", "0"], r"--learning_rate must be a positive number, got 0\.0"),
    ("learning_rate nan", ["transformer", "--vqgan_model_name_or_path", "m", "--learning_rate", "nan"], r"--learning_rate must be a positive number, got nan"),
    ("streaming without steps", ["vqgan", "--streaming"], r"--streaming datasets have no length: pass --max_train_steps"),
    ("two model sources", ["vqgan", "--preset", "digits-tiny", "--model_config", "c.json"], r"Pass at most one of --preset, --model_config and --pretrained_model_name_or_path"),
    ("pkeep 1.5", ["transformer", "--vqgan_model_name_or_path", "m", "--pkeep", "1.5"], r"--pkeep must be in \[0, 1\] and --class_dropout_prob in \[0, 1\); got 1\.5, 0\.1"),
    ("class dropout 1", ["transformer", "--vqgan_model_name_or_path", "m", "--class_dropout_prob", "1"], r"got 1\.0, 1\.0"),
    ("condition without tokenizer", ["transformer", "--vqgan_model_name_or_path", "m", "--condition_type", "edges"], r"--condition_type and --cond_vqgan_model_name_or_path go together"),
    ("depth without column", ["vqgan", "--condition_type", "depth"], r"--condition_type depth reads paired maps: pass --condition_column"),
    ("segmentation labels", ["vqgan", "--condition_type", "segmentation", "--condition_column", "s", "--num_labels", "1"], r"--condition_type segmentation needs --num_labels >= 2, got 1"),
]
# fmt: on


@pytest.mark.parametrize(
    "argv, message", [c[1:] for c in TRAIN_CONTRADICTIONS], ids=[c[0] for c in TRAIN_CONTRADICTIONS]
)
def test_train_script_refuses_contradictory_options(train_main, capsys, argv, message):
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err), err


# fmt: off
TRAIN_PARSER_CASES = [
    ("batch size 0", ["vqgan", "--train_batch_size", "0"], r"argument --train_batch_size: expected a positive integer, got 0"),
    ("batch size text", ["vqgan", "--train_batch_size", "eight"], r"argument --train_batch_size: invalid positive_int value: 'eight'"),
    ("max_grad_norm < 0", ["vqgan", "--max_grad_norm", "-1"], r"argument --max_grad_norm: expected a finite number >= 0, got -1"),
    ("validation split 1.5", ["vqgan", "--validation_split", "1.5"], r"argument --validation_split: a held-out fraction must be in \(0, 1\), got 1\.5"),
    ("mixed precision", ["vqgan", "--mixed_precision", "fp8"], r"argument --mixed_precision: invalid choice: 'fp8'"),
    ("unknown stage", ["gan"], r"argument stage: invalid choice: 'gan'"),
    ("transformer without tokenizer", ["transformer"], r"the following arguments are required: --vqgan_model_name_or_path"),
    ("disc loss", ["vqgan", "--disc_loss", "wgan"], r"argument --disc_loss: invalid choice: 'wgan'"),
]
# fmt: on


@pytest.mark.parametrize("argv, message", [c[1:] for c in TRAIN_PARSER_CASES], ids=[c[0] for c in TRAIN_PARSER_CASES])
def test_train_script_rejects_malformed_options(train_main, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        train_main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_case_count():
    """The number of bad-input cases, for the record (issue 9 asks for it); ids are unique within each table."""
    tables = [VQGAN_CASES, QUANTIZER_CASES, PRIOR_CASES, PIPELINE_CASES, CLI_CASES, CLI_PARSER_CASES,
              TRAIN_CONTRADICTIONS, TRAIN_PARSER_CASES]  # fmt: skip
    for table in tables:
        assert len({case[0] for case in table}) == len(table)
    print(f"\n[count] {sum(map(len, tables))} bad-input cases: {[len(table) for table in tables]}")
