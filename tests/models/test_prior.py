from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import testing_utils
from hf_vqgan.models.prior import (
    VQGANPriorConfig,
    VQGANPriorForCausalLM,
    VQGANPriorModel,
    register_auto_classes,
)
from hf_vqgan.models.sampling import (
    NoCacheDecodeStep,
    SamplingSettings,
    StaticCacheDecodeStep,
    choose_image_codes,
    sample_next_token,
)
from testing_utils import error_prior_config, seeded

SRC = Path(__file__).resolve().parents[2] / "src"
K, H, W = 16, 3, 4  # codebook size and latent grid of the tiny priors
T = H * W
NUM_CLASSES, COND_K, COND_LEN = 5, 8, 3
# Two layers of four heads; an init wider than GPT-2's 0.02 so the random network has peaked, input-dependent
# next-token distributions.
PRIOR = dict(codebook_size=K, latent_height=H, latent_width=W, n_layer=2, n_head=4, initializer_range=0.2)

CONDITIONINGS = {
    "unconditional": {},
    "class": {"num_classes": NUM_CLASSES},
    "cond": {"cond_codebook_size": COND_K, "cond_length": COND_LEN},
    "class+cond": {"num_classes": NUM_CLASSES, "cond_codebook_size": COND_K, "cond_length": COND_LEN},
}


def tiny_config(**overrides) -> VQGANPriorConfig:
    return VQGANPriorConfig(**testing_utils.prior_config(**{**PRIOR, **overrides}))


def tiny_prior(seed: int = 0, **overrides) -> VQGANPriorForCausalLM:
    return testing_utils.tiny_prior(seed, **{**PRIOR, **overrides})


def conditioning_inputs(config: VQGANPriorConfig, batch_size: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    if config.num_classes > 0:
        inputs["class_labels"] = torch.randint(0, config.num_classes, (batch_size,), generator=generator)
    if config.cond_codebook_size > 0:
        shape = (batch_size, config.cond_length)
        inputs["cond_indices"] = torch.randint(0, config.cond_codebook_size, shape, generator=generator)
    if not inputs:
        inputs["batch_size"] = batch_size
    return inputs


# ----- config and token layout -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        # (prefix_length, null_class_token, start_token, cond_token_offset, vocab_size), worked out by hand from K=16
        ("unconditional", (1, None, 16, 17, 17)),
        ("class", (1, 21, 22, 23, 23)),
        ("cond", (3, None, 16, 17, 25)),
        ("class+cond", (4, 21, 22, 23, 31)),
    ],
)
def test_token_layout(name, expected):
    config = tiny_config(**CONDITIONINGS[name])
    layout = (config.prefix_length, config.null_class_token, config.start_token, config.cond_token_offset)
    assert layout + (config.vocab_size,) == expected
    assert config.image_token_range == (0, K)
    assert config.class_token_offset == K
    assert config.num_image_tokens == T
    assert config.n_positions == config.prefix_length + T


def test_config_accepts_derived_vocab_size_and_larger_n_positions():
    config = tiny_config(num_classes=NUM_CLASSES, vocab_size=23, n_positions=64)
    assert config.vocab_size == 23 and config.n_positions == 64


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"codebook_size": 0}, "codebook_size"),
        ({"latent_height": 0}, "latent_height"),
        ({"num_classes": -1}, "num_classes"),
        ({"cond_codebook_size": 8}, "cond_length"),
        ({"cond_length": 2}, "cond_codebook_size"),
        ({"n_embd": 30}, "divisible"),
        ({"resid_pdrop": 1.0}, "resid_pdrop"),
        ({"layer_norm_epsilon": 0.0}, "layer_norm_epsilon"),
        ({"vocab_size": 99}, "vocab_size.*17"),
        ({"n_positions": T}, "n_positions.*13"),
    ],
)
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


def test_network_is_mingpt():
    model = tiny_prior()
    config = model.config
    block = model.transformer.h[0]
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(block.mlp.act(x), 0.5 * x * (1 + torch.erf(x / math.sqrt(2))), rtol=0, atol=1e-6)
    assert block.ln_1.eps == block.ln_2.eps == model.transformer.ln_f.eps == 1e-5
    assert block.attn.c_attn.bias is not None and block.attn.c_proj.bias is not None
    assert block.mlp.c_fc.weight.shape == (config.n_embd, 4 * config.n_embd)
    assert model.transformer.wpe.weight.shape == (config.n_positions, config.n_embd)
    assert model.lm_head.bias is None
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()  # untied


def mingpt_logits(model: VQGANPriorForCausalLM, input_ids: torch.LongTensor) -> torch.Tensor:
    """minGPT's forward (taming's GPT) written out with plain torch ops on the prior's weights.

    transformers' Conv1D stores weights as (in, out), i.e. the transpose of minGPT's nn.Linear; c_attn holds minGPT's
    query, key and value projections side by side.
    """
    config, body = model.config, model.transformer
    B, L = input_ids.shape
    D, heads = config.n_embd, config.n_head
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    x = body.wte.weight[input_ids] + body.wpe.weight[:L]  # (B, L, D)
    for block in body.h:
        h = F.layer_norm(x, (D,), block.ln_1.weight, block.ln_1.bias, eps=1e-5)
        q, k, v = (h @ block.attn.c_attn.weight + block.attn.c_attn.bias).split(D, dim=-1)
        q, k, v = (t.view(B, L, heads, D // heads).transpose(1, 2) for t in (q, k, v))  # (B, heads, L, D/heads)
        attention = (q @ k.transpose(-2, -1) / math.sqrt(D // heads)).masked_fill(~causal, float("-inf")).softmax(-1)
        y = (attention @ v).transpose(1, 2).reshape(B, L, D)
        x = x + y @ block.attn.c_proj.weight + block.attn.c_proj.bias
        h = F.layer_norm(x, (D,), block.ln_2.weight, block.ln_2.bias, eps=1e-5)
        h = F.gelu(h @ block.mlp.c_fc.weight + block.mlp.c_fc.bias)  # nn.GELU(): exact erf GELU
        x = x + h @ block.mlp.c_proj.weight + block.mlp.c_proj.bias
    x = F.layer_norm(x, (D,), body.ln_f.weight, body.ln_f.bias, eps=1e-5)
    return x @ model.lm_head.weight.T  # bias-free head


def test_forward_computes_mingpt():
    model = tiny_prior(**CONDITIONINGS["class+cond"])
    input_ids = torch.randint(0, model.config.vocab_size, (2, model.config.n_positions), generator=seeded(0))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, mingpt_logits(model, input_ids), rtol=1e-5, atol=1e-5)


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    config = VQGANPriorConfig(
        codebook_size=K, latent_height=H, latent_width=W, n_embd=64, n_layer=4, n_head=4, initializer_range=0.02
    )
    model = VQGANPriorForCausalLM(config)
    block = model.transformer.h[0]
    residual_std = 0.02 / math.sqrt(2 * config.n_layer)
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert model.lm_head.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(block.ln_1.weight == 1) and torch.all(block.attn.c_attn.bias == 0)


# ----- input ids -----------------------------------------------------------------------------------------------------


def test_build_input_ids_follows_layout():
    model = tiny_prior(**CONDITIONINGS["class+cond"])
    config = model.config
    indices = torch.arange(T).reshape(1, H, W) % K
    ids = model.build_input_ids(indices, class_labels=torch.tensor([2]), cond_indices=torch.tensor([[0, 7, 3]]))
    expected = [23 + 0, 23 + 7, 23 + 3, 16 + 2] + (torch.arange(T) % K).tolist()
    assert ids.tolist() == [expected]
    assert ids.shape == (1, config.prefix_length + T)
    # A flat (B, T) sequence gives the same ids, and a shorter one the same start.
    flat = model.build_input_ids(indices.reshape(1, T), class_labels=torch.tensor([2]), cond_indices=ids[:, :3] - 23)
    assert torch.equal(flat, ids)
    partial = model.build_input_ids(indices.reshape(1, T)[:, :5], torch.tensor([2]), ids[:, :3] - 23)
    assert torch.equal(partial, ids[:, : config.prefix_length + 5])
    # Label num_classes is the null class.
    assert model.prefix_ids(torch.tensor([NUM_CLASSES]), ids[:, :3] - 23)[0, -1].item() == config.null_class_token


def test_build_input_ids_unconditional_uses_start_token():
    model = tiny_prior()
    ids = model.build_input_ids(torch.zeros(3, H, W, dtype=torch.long))
    assert ids.shape == (3, 1 + T)
    assert torch.all(ids[:, 0] == model.config.start_token) and torch.all(ids[:, 1:] == 0)
    assert torch.equal(model.prefix_ids(batch_size=2), torch.full((2, 1), model.config.start_token))


BAD_INPUTS = {
    "labels for unconditional": ("unconditional", {"indices": "ok", "class_labels": torch.tensor([0, 1])}, ValueError),
    "missing labels": ("class", {"indices": "ok"}, ValueError),
    "label too large": ("class", {"indices": "ok", "class_labels": torch.tensor([0, NUM_CLASSES + 1])}, ValueError),
    "negative label": ("class", {"indices": "ok", "class_labels": torch.tensor([-1, 0])}, ValueError),
    "list labels": ("class", {"indices": "ok", "class_labels": [0, 1]}, TypeError),
    "float labels": ("class", {"indices": "ok", "class_labels": torch.tensor([0.0, 1.0])}, TypeError),
    "labels 2d": ("class", {"indices": "ok", "class_labels": torch.tensor([[0], [1]])}, ValueError),
    "labels batch mismatch": ("class", {"indices": "ok", "class_labels": torch.tensor([0, 1, 2])}, ValueError),
    "missing cond": ("cond", {"indices": "ok"}, ValueError),
    "cond for unconditioned": ("unconditional", {"indices": "ok", "cond_indices": torch.zeros(2, 3)}, ValueError),
    "cond wrong length": ("cond", {"indices": "ok", "cond_indices": torch.zeros(2, COND_LEN + 1).long()}, ValueError),
    "cond out of range": ("cond", {"indices": "ok", "cond_indices": torch.full((2, COND_LEN), COND_K)}, ValueError),
    "indices out of range": ("unconditional", {"indices": torch.full((2, H, W), K)}, ValueError),
    "negative indices": ("unconditional", {"indices": torch.full((2, H, W), -1)}, ValueError),
    "float indices": ("unconditional", {"indices": torch.zeros(2, H, W)}, TypeError),
    "wrong grid": ("unconditional", {"indices": torch.zeros(2, W, H).long()}, ValueError),
    "too many tokens": ("unconditional", {"indices": torch.zeros(2, T + 1).long()}, ValueError),
    "indices 1d": ("unconditional", {"indices": torch.zeros(T).long()}, ValueError),
    "batch_size mismatch": ("unconditional", {"indices": "ok", "batch_size": 3}, ValueError),
    "no batch size": ("unconditional", {}, ValueError),
    "batch_size zero": ("unconditional", {"batch_size": 0}, ValueError),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_build_input_ids_rejects_bad_arguments(case):
    name, kwargs, error = BAD_INPUTS[case]
    model = tiny_prior(**CONDITIONINGS[name])
    if kwargs.get("indices") == "ok":
        kwargs = {**kwargs, "indices": torch.zeros(2, H, W, dtype=torch.long)}
    with pytest.raises(error):
        model.build_input_ids(**kwargs)


# ----- loss ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONDITIONINGS))
def test_forward_and_loss_on_image_positions_only(name):
    model = tiny_prior(**CONDITIONINGS[name])
    config = model.config
    indices = torch.randint(0, K, (3, H, W), generator=seeded(1))
    input_ids = model.build_input_ids(indices, **conditioning_inputs(config, 3))
    output = model(input_ids, labels=model.image_token_labels(input_ids))
    assert output.logits.shape == (3, config.prefix_length + T, config.vocab_size)

    # By hand: the logits at positions P-1 .. P+T-2 predict the T image tokens; the prefix is never a target.
    P = config.prefix_length
    predicting = output.logits[:, P - 1 : -1].reshape(-1, config.vocab_size)  # (B*T, V)
    expected = F.cross_entropy(predicting.float(), indices.reshape(-1))
    torch.testing.assert_close(output.loss, expected, rtol=1e-6, atol=1e-6)
    with_prefix = F.cross_entropy(output.logits[:, :-1].reshape(-1, config.vocab_size), input_ids[:, 1:].reshape(-1))
    if P > 1:
        assert not torch.allclose(with_prefix, expected)

    output.loss.backward()
    assert model.lm_head.weight.grad is not None and model.transformer.wte.weight.grad.abs().sum() > 0


# ----- training corruptions ------------------------------------------------------------------------------------------


def test_corrupt_image_tokens():
    model = tiny_prior(num_classes=NUM_CLASSES)
    batch = 500
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=seeded(0))
    input_ids = model.build_input_ids(torch.zeros(batch, H, W, dtype=torch.long), class_labels=labels)

    assert torch.equal(model.corrupt_image_tokens(input_ids, pkeep=1.0, generator=seeded(1)), input_ids)

    corrupted = model.corrupt_image_tokens(input_ids, pkeep=0.0, generator=seeded(1))
    assert torch.equal(corrupted[:, :1], input_ids[:, :1])  # prefix untouched
    image = corrupted[:, 1:]
    assert image.min() >= 0 and image.max() < K
    # Every token is redrawn uniformly from the K codes, so each code (0 included) holds ~1/K of the tokens.
    counts = torch.bincount(image.reshape(-1), minlength=K).float()
    expected = batch * T / K
    assert torch.all((counts - expected).abs() < 0.2 * expected), counts

    half = model.corrupt_image_tokens(input_ids, pkeep=0.5, generator=seeded(2))
    unchanged = (half[:, 1:] == 0).float().mean().item()
    assert unchanged == pytest.approx(0.5 + 0.5 / K, abs=0.03)

    again = model.corrupt_image_tokens(input_ids, pkeep=0.5, generator=seeded(2))
    assert torch.equal(again, half)  # reproducible with the generator

    for pkeep in (-0.1, 1.5):
        with pytest.raises(ValueError, match="pkeep"):
            model.corrupt_image_tokens(input_ids, pkeep=pkeep)


def test_drop_class_labels_yields_null_class_inputs():
    model = tiny_prior(num_classes=NUM_CLASSES)
    labels = torch.randint(0, NUM_CLASSES, (4000,), generator=seeded(0))

    assert torch.equal(model.drop_class_labels(labels, 0.0, seeded(1)), labels)
    dropped_all = model.drop_class_labels(labels, 1.0, seeded(1))
    assert torch.all(dropped_all == NUM_CLASSES)
    ids = model.build_input_ids(torch.zeros(4000, H, W, dtype=torch.long), class_labels=dropped_all)
    assert torch.all(ids[:, 0] == model.config.null_class_token)

    dropped = model.drop_class_labels(labels, 0.3, seeded(1))
    is_null = dropped == NUM_CLASSES
    assert is_null.float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert torch.equal(dropped[~is_null], labels[~is_null])

    with pytest.raises(ValueError, match="prob"):
        model.drop_class_labels(labels, 1.5)
    with pytest.raises(ValueError, match="num_classes=0"):
        tiny_prior().drop_class_labels(labels, 0.1)


# ----- Auto classes and serialization ----------------------------------------------------------------------------


def test_auto_classes_round_trip(tmp_path):
    register_auto_classes()  # a second registration is harmless
    model = tiny_prior(**CONDITIONINGS["class+cond"])
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()

    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is VQGANPriorConfig
    ignored = ("_name_or_path", "transformers_version")
    saved, original = config.to_dict(), model.config.to_dict()
    assert {k: v for k, v in saved.items() if k not in ignored} == {
        k: v for k, v in original.items() if k not in ignored
    }
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is VQGANPriorForCausalLM
    assert type(AutoModel.from_pretrained(tmp_path)) is VQGANPriorModel

    ids = model.build_input_ids(
        torch.randint(0, K, (2, H, W), generator=seeded(0)), **conditioning_inputs(model.config, 2)
    )
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


# ----- sampling ------------------------------------------------------------------------------------------------------


def greedy_by_hand(model: VQGANPriorForCausalLM, input_ids: torch.LongTensor) -> torch.LongTensor:
    """Reference decoder: re-run the whole sequence and take the most likely image code, as taming's sampler."""
    config = model.config
    with torch.no_grad():
        while input_ids.shape[1] < config.prefix_length + T:
            logits = model(input_ids, use_cache=False).logits[:, -1, :K]  # (B, K)
            input_ids = torch.cat([input_ids, logits.argmax(-1, keepdim=True)], dim=1)
    return input_ids[:, config.prefix_length :].reshape(-1, H, W)


@pytest.mark.parametrize("name", list(CONDITIONINGS))
def test_samples_are_image_grids(name):
    model = tiny_prior(**CONDITIONINGS[name])
    samples = model.sample(**conditioning_inputs(model.config, 3), generator=seeded(0))
    assert samples.shape == (3, H, W) and samples.dtype == torch.long
    assert samples.min() >= 0 and samples.max() < K


@pytest.mark.parametrize("name", ["unconditional", "class+cond"])
def test_greedy_with_cache_equals_recomputing_the_prefix(name):
    model = tiny_prior(**CONDITIONINGS[name])
    inputs = conditioning_inputs(model.config, 3)
    cached = model.sample(**inputs, top_k=1)
    recomputed = model.sample(**inputs, top_k=1, decode_step=NoCacheDecodeStep())
    assert torch.equal(cached, recomputed)
    assert torch.equal(cached, greedy_by_hand(model, model.build_input_ids(**inputs)))
    assert len(torch.unique(cached)) > 1  # the decoder really depends on context


def test_static_cache_equals_dynamic_cache():
    model = tiny_prior(num_classes=NUM_CLASSES)
    labels = torch.tensor([0, 3])
    dynamic = model.sample(class_labels=labels, top_k=1)
    static = model.sample(class_labels=labels, top_k=1, decode_step=StaticCacheDecodeStep(mode="eager"))
    assert torch.equal(dynamic, static)
    step = StaticCacheDecodeStep(mode="eager")
    guided = model.sample(class_labels=labels, guidance_scale=3.0, generator=seeded(4), decode_step=step)
    assert torch.equal(guided, model.sample(class_labels=labels, guidance_scale=3.0, generator=seeded(4)))


def test_same_seed_same_tokens_different_seed_different_tokens():
    model = tiny_prior()
    first = model.sample(batch_size=4, generator=seeded(7))
    assert torch.equal(first, model.sample(batch_size=4, generator=seeded(7)))
    assert not torch.equal(first, model.sample(batch_size=4, generator=seeded(8)))


def test_guidance_scale_one_equals_conditional_sampling():
    # The guided combination (conditional and null-class rows) at s = 1 is the conditional distribution itself.
    model = tiny_prior(num_classes=NUM_CLASSES)
    logits = torch.randn(6, model.config.vocab_size, generator=seeded(0))  # 3 conditional rows, 3 null-class rows
    noise = torch.empty(3, K).exponential_(generator=seeded(1))
    guided = choose_image_codes(logits, noise, SamplingSettings(guidance_scale=1.0, temperature=0.7), (0, K))
    plain = choose_image_codes(logits[:3], noise, SamplingSettings(temperature=0.7), (0, K))
    assert torch.equal(guided, plain)
    labels = torch.tensor([1, 4, 0])
    assert torch.equal(
        model.sample(class_labels=labels, generator=seeded(3), temperature=0.7),
        model.sample(class_labels=labels, generator=seeded(3), temperature=0.7, guidance_scale=1.0),
    )


def test_guidance_runs_one_batched_forward_per_step_with_shared_tokens():
    model = tiny_prior(num_classes=NUM_CLASSES)
    calls = []
    hook = model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs.get("input_ids", args[0] if args else None)), with_kwargs=True
    )
    try:
        samples = model.sample(class_labels=torch.tensor([2, 3]), guidance_scale=4.0, generator=seeded(0))
    finally:
        hook.remove()
    assert len(calls) == T  # one forward per sampled token: prefill, then one token at a time
    assert all(ids.shape[0] == 4 for ids in calls)
    assert calls[0][:, 0].tolist() == [16 + 2, 16 + 3, 21, 21]  # conditional rows, then null-class rows
    for ids in calls[1:]:
        assert torch.equal(ids[:2], ids[2:])  # the same token was appended to both halves
    assert torch.equal(torch.cat([c[:2, -1:] for c in calls[1:]], dim=1), samples.reshape(2, T)[:, :-1])


def test_guidance_combines_logits_as_uncond_plus_scale_times_difference():
    # Image codes 0..3 and two non-image ids whose huge logits must never be chosen.
    cond = torch.tensor([[0.0, 1.0, 0.9, 0.0, 50.0, 50.0]])
    uncond = torch.tensor([[0.0, 1.0, 0.0, 0.0, 50.0, 50.0]])
    scores = torch.cat([cond, uncond])  # (2B, V)
    noise = torch.ones(1, 4)
    guided = choose_image_codes(scores, noise, SamplingSettings(guidance_scale=3.0, top_k=1), (0, 4))
    # uncond + 3 * (cond - uncond) = [0, 1, 2.7, 0]: code 2 wins, while cond alone prefers code 1.
    assert guided.tolist() == [2]
    plain = choose_image_codes(scores, noise, SamplingSettings(guidance_scale=1.0, top_k=1), (0, 4))
    assert plain.tolist() == [1]


def test_prefix_indices_are_kept_and_callback_reports_each_token():
    model = tiny_prior(num_classes=NUM_CLASSES)
    prefix = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    reports = []
    samples = model.sample(
        class_labels=torch.tensor([0, 1]),
        prefix_indices=prefix,
        guidance_scale=2.0,
        generator=seeded(0),
        callback=lambda step, tokens: reports.append((step, tokens.clone())),
    )
    assert torch.equal(samples.reshape(2, T)[:, :5], prefix)
    assert [step for step, _ in reports] == list(range(T - 5))
    assert all(tokens.shape == (2, 5 + step + 1) for step, tokens in reports)
    assert torch.equal(reports[-1][1], samples.reshape(2, T))

    full = torch.randint(0, K, (2, T), generator=seeded(1))
    assert torch.equal(model.sample(class_labels=torch.tensor([0, 1]), prefix_indices=full), full.reshape(2, H, W))
    unconditional = tiny_prior()
    assert torch.equal(unconditional.sample(prefix_indices=prefix).reshape(2, T)[:, :5], prefix)


def test_sample_restores_training_mode():
    model = tiny_prior(resid_pdrop=0.5).train()
    assert torch.equal(model.sample(batch_size=2, top_k=1), model.eval().sample(batch_size=2, top_k=1))
    model.train()
    model.sample(batch_size=1)
    assert model.training


BAD_SAMPLE_ARGUMENTS = {
    "temperature zero": {"temperature": 0.0},
    "temperature negative": {"temperature": -1.0},
    "temperature nan": {"temperature": float("nan")},
    "top_k zero": {"top_k": 0},
    "top_k float": {"top_k": 1.5},
    "top_p zero": {"top_p": 0.0},
    "top_p above one": {"top_p": 1.5},
    "guidance negative": {"guidance_scale": -1.0},
    "label out of range": {"class_labels": torch.tensor([NUM_CLASSES + 1, 0])},
    "prefix out of range": {"prefix_indices": torch.full((2, 3), K)},
    "prefix too long": {"prefix_indices": torch.zeros(2, T + 1).long()},
    "prefix 3d": {"prefix_indices": torch.zeros(2, H, W).long()},
    "prefix batch mismatch": {"prefix_indices": torch.zeros(3, 2).long()},
    "grid not a pair": {"grid": (3,)},
    "grid zero": {"grid": (0, W)},
    "grid smaller than trained": {"grid": (H - 1, W)},
    "prefix longer than grid": {"prefix_indices": torch.zeros(2, T + 1).long(), "grid": (H, W)},
}


@pytest.mark.parametrize("case", list(BAD_SAMPLE_ARGUMENTS))
def test_sample_rejects_bad_arguments(case):
    model = tiny_prior(num_classes=NUM_CLASSES)
    kwargs = {"class_labels": torch.tensor([0, 1]), **BAD_SAMPLE_ARGUMENTS[case]}
    with pytest.raises(ValueError):
        model.sample(**kwargs)


def test_sample_rejects_bad_conditioning():
    with pytest.raises(ValueError, match="null class"):
        tiny_prior().sample(batch_size=2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="unconditional"):
        tiny_prior().sample(class_labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="class_labels"):
        tiny_prior(num_classes=NUM_CLASSES).sample(batch_size=2)
    with pytest.raises(ValueError, match="cond_indices"):
        tiny_prior(**CONDITIONINGS["cond"]).sample(cond_indices=torch.zeros(2, COND_LEN + 1).long())


# ----- sample_next_token ---------------------------------------------------------------------------------------------


def test_sample_next_token_never_leaves_the_image_range():
    logits = torch.tensor([[0.0, 2.0, 1.0, 0.5, 100.0]])  # id 4 is not an image token
    assert sample_next_token(logits, (0, 4), top_k=1).tolist() == [1]
    draws = sample_next_token(logits.expand(2000, -1), (0, 4), generator=seeded(0))
    assert draws.max() < 4
    shifted = sample_next_token(logits, (1, 4), top_k=1)  # a range that does not start at 0 returns vocabulary ids
    assert shifted.tolist() == [1]


def test_sample_next_token_follows_softmax_and_filters():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(8000, -1)
    frequencies = torch.bincount(sample_next_token(logits, (0, 4), generator=seeded(0)), minlength=4) / 8000
    torch.testing.assert_close(frequencies, probs, rtol=0, atol=0.02)

    def support(**kwargs):
        return set(sample_next_token(logits, (0, 4), generator=seeded(1), **kwargs).tolist())

    assert support(top_k=2) == {0, 1}
    assert support(top_p=0.75) == {0, 1}  # 0.5 + 0.3 reaches 0.75
    assert support(top_p=0.81) == {0, 1, 2}
    assert support(top_p=0.1) == {0}
    assert support(temperature=0.01) == {0}
    # Temperature 2 flattens the distribution: p ~ sqrt(probs).
    flat = torch.bincount(sample_next_token(logits, (0, 4), temperature=2.0, generator=seeded(2)), minlength=4) / 8000
    torch.testing.assert_close(flat, probs.sqrt() / probs.sqrt().sum(), rtol=0, atol=0.02)


def test_sample_next_token_is_reproducible_and_validates():
    logits = torch.randn(16, K, generator=seeded(0))
    assert torch.equal(
        sample_next_token(logits, (0, K), generator=seeded(5)), sample_next_token(logits, (0, K), generator=seeded(5))
    )
    for kwargs in ({"temperature": 0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 2.0}):
        with pytest.raises(ValueError):
            sample_next_token(logits, (0, K), **kwargs)
    with pytest.raises(ValueError, match="batch_size, vocab_size"):
        sample_next_token(logits[0], (0, K))


# ----- generate() stays in range -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONDITIONINGS))
def test_plain_generate_emits_one_image_of_image_codes(name):
    model = tiny_prior(**CONDITIONINGS[name])
    config = model.config
    prefix = model.prefix_ids(**conditioning_inputs(config, 3))
    if name != "unconditional":  # its only non-image id is the start token, which the random network never prefers
        # Without the default generation config the most likely ids are often class, null or condition tokens.
        unsuppressed = model.generate(prefix, max_length=config.n_positions, suppress_tokens=None)
        assert (unsuppressed[:, config.prefix_length :] >= K).any()
    for kwargs in ({}, {"do_sample": True}):
        sequences = model.generate(prefix, **kwargs)
        assert sequences.shape == (3, config.prefix_length + T)
        assert torch.equal(sequences[:, : config.prefix_length], prefix)
        image = sequences[:, config.prefix_length :]
        assert image.min() >= 0 and image.max() < K
    greedy = model.generate(prefix)[:, config.prefix_length :].reshape(3, H, W)
    assert torch.equal(greedy, model.sample(**conditioning_inputs(config, 3), top_k=1))


def test_going_past_n_positions_is_a_clear_error():
    model = tiny_prior(num_classes=NUM_CLASSES)
    prefix = model.prefix_ids(torch.tensor([0, 1]))
    n = model.config.n_positions  # 13
    with pytest.raises(ValueError, match=r"generate\(\) of 15 tokens from a prompt of 1 .*n_positions=13"):
        model.generate(prefix, max_new_tokens=14)
    with pytest.raises(ValueError, match=r"generate\(\) of 14 tokens.*n_positions=13"):
        model.generate(prefix, max_length=14)
    assert model.generate(prefix, max_new_tokens=T).shape == (2, n)
    too_long = torch.zeros(1, n + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"0 cached \+ 14 ids needs 14 positions, but the prior has n_positions=13"):
        model(too_long)
    cache_output = model(too_long[:, :n], use_cache=True)
    with pytest.raises(ValueError, match=r"13 cached \+ 1 ids needs 14 positions"):
        model(too_long[:, :1], cache=cache_output.cache, use_cache=True)


def test_out_of_vocabulary_ids_are_refused_where_they_enter():
    model = tiny_prior(num_classes=NUM_CLASSES)  # vocab_size 23
    with pytest.raises(ValueError, match=r"`input_ids` must lie in \[0, 23\), got values in \[0, 23\]"):
        model.generate(torch.tensor([[0, 23]]), max_new_tokens=1)
    with pytest.raises(ValueError, match=r"`indices` must lie in \[0, 16\), got values in \[0, 16\]"):
        model.build_input_ids(torch.tensor([[0, 16]]), class_labels=torch.tensor([0]))
    with pytest.raises(ValueError, match=r"`prefix_indices` must lie in \[0, 16\)"):
        model.sample(class_labels=torch.tensor([0]), prefix_indices=torch.tensor([[16]]))


# ----- configs and loaders -------------------------------------------------------------------------------------------


def test_configs_saved_with_preprocessing_fields_still_load(tmp_path):
    # Before issue 13 the prior's config carried the condition preprocessing settings; they now belong to the image
    # processor, and old folders keep them readable as plain attributes.
    model = tiny_prior(**CONDITIONINGS["cond"])
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.update(condition_type="segmentation", cond_num_labels=7, lowres_factor=4)
    saved.pop("auto_map")  # old folders have none
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "generation_config.json").unlink()  # nor a generation config
    loaded = VQGANPriorForCausalLM.from_pretrained(tmp_path)
    config = loaded.config
    assert (config.condition_type, config.cond_num_labels, config.lowres_factor) == ("segmentation", 7, 4)
    assert getattr(tiny_config(), "condition_type", None) is None  # no longer a field
    assert loaded.generation_config.max_length == config.prefix_length + T  # the default replaces the missing one
    assert type(AutoConfig.from_pretrained(tmp_path)) is VQGANPriorConfig


LOAD_WITHOUT_IMPORT = """
import sys
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

assert "hf_vqgan" not in sys.modules
folder = sys.argv[1]
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
body = AutoModel.from_pretrained(folder, trust_remote_code=True)
assert type(config).__name__ == "VQGANPriorConfig" and type(body).__name__ == "VQGANPriorModel"
assert type(model).__module__ == "hf_vqgan.models.prior", type(model).__module__
ids = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save((model(ids).logits, model.generate(ids[:, : config.prefix_length])), sys.argv[3])
"""


def test_auto_model_loads_a_saved_prior_without_importing_hf_vqgan(tmp_path):
    model = tiny_prior(**CONDITIONINGS["class+cond"])
    folder = tmp_path / "prior"
    model.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"] == (
        "hf_vqgan_prior.VQGANPriorForCausalLM"
    )
    assert "import VQGANPriorConfig, VQGANPriorForCausalLM" in (folder / "hf_vqgan_prior.py").read_text()
    ids = model.build_input_ids(
        torch.randint(0, K, (2, H, W), generator=seeded(0)), **conditioning_inputs(model.config, 2)
    )
    torch.save(ids, tmp_path / "ids.pt")
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_IMPORT, str(folder), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    logits, generated = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids).logits, rtol=0, atol=0)
    assert torch.equal(generated, model.generate(ids[:, : model.config.prefix_length]))
    # After `import hf_vqgan` the registered classes load it the plain way, and a re-save holds no copied model code.
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    loaded.save_pretrained(tmp_path / "again")
    assert sorted(p.name for p in (tmp_path / "again").glob("*.py")) == ["hf_vqgan_prior.py"]


# ------------------------------------------------------------------------------------------------ bad inputs
# One row per bad input: (id, call, exception type, regex the message must match). Each regex names the bad value
# (or the option) and the expectation, so an error raised for another reason, or one that says less, fails.
@pytest.fixture(scope="module")
def error_priors() -> dict[str, VQGANPriorForCausalLM]:
    """`prior`: class-conditional (3 classes), `unconditional`: no classes; both of `error_prior_config()`."""
    return dict(
        prior=testing_utils.tiny_prior(0, **error_prior_config(num_classes=3)),
        unconditional=testing_utils.tiny_prior(0, **error_prior_config()),
    )


# fmt: off
ERROR_CASES = [
    ("config codebook_size=0", lambda o: VQGANPriorConfig(**error_prior_config(codebook_size=0)), ValueError, r"`codebook_size` must be a positive integer, got 0"),
    ("config codebook_size str", lambda o: VQGANPriorConfig(**error_prior_config(codebook_size="64")), ValueError, r"`codebook_size` must be a positive integer, got '64'"),
    ("config num_classes float", lambda o: VQGANPriorConfig(**error_prior_config(num_classes=2.5)), ValueError, r"`num_classes` must be a non-negative integer, got 2\.5"),
    ("config num_classes<0", lambda o: VQGANPriorConfig(**error_prior_config(num_classes=-1)), ValueError, r"`num_classes` must be a non-negative integer, got -1"),
    ("config cond without length", lambda o: VQGANPriorConfig(**error_prior_config(cond_codebook_size=8)), ValueError, r"`cond_codebook_size` \(8\) and `cond_length` \(0\) must be both positive"),
    ("config heads", lambda o: VQGANPriorConfig(**error_prior_config(n_head=3)), ValueError, r"`n_embd` \(16\) must be divisible by `n_head` \(3\)"),
    ("config dropout", lambda o: VQGANPriorConfig(**error_prior_config(attn_pdrop=1.0)), ValueError, r"`attn_pdrop` must be a probability in \[0, 1\), got 1\.0"),
    ("config vocab_size", lambda o: VQGANPriorConfig(**error_prior_config(vocab_size=10)), ValueError, r"must be 65 \(or left unset\), got 10"),
    ("config n_positions", lambda o: VQGANPriorConfig(**error_prior_config(n_positions=4)), ValueError, r"`n_positions` must hold a whole sequence of .* = 17 tokens, got 4"),
    ("build float indices", lambda o: o["prior"].build_input_ids(torch.zeros(1, 4, 4), class_labels=torch.tensor([0])), TypeError, r"`indices` must be an integer tensor, got dtype torch\.float32"),
    ("build indices out of range", lambda o: o["prior"].build_input_ids(torch.full((1, 4, 4), 64), class_labels=torch.tensor([0])), ValueError, r"`indices` must lie in \[0, 64\), got values in \[64, 64\]"),
    ("build wrong grid", lambda o: o["prior"].build_input_ids(torch.zeros(1, 3, 4, dtype=torch.long), class_labels=torch.tensor([0])), ValueError, r"`indices` must have shape \(batch_size, 4, 4\), got \(1, 3, 4\)"),
    ("build too many tokens", lambda o: o["prior"].build_input_ids(torch.zeros(1, 17, dtype=torch.long), class_labels=torch.tensor([0])), ValueError, r"T <= 16, got \(1, 17\)"),
    ("build missing class", lambda o: o["prior"].build_input_ids(torch.zeros(1, 4, 4, dtype=torch.long)), ValueError, r"class-conditional \(`num_classes=3`\): pass `class_labels`"),
    ("build class out of range", lambda o: o["prior"].build_input_ids(class_labels=torch.tensor([4])), ValueError, r"`class_labels` must lie in \[0, 4\), got values in \[4, 4\]"),
    ("build class as list", lambda o: o["prior"].build_input_ids(class_labels=[0]), TypeError, r"`class_labels` must be a torch\.Tensor, got list"),
    ("build class on unconditional", lambda o: o["unconditional"].build_input_ids(class_labels=torch.tensor([0])), ValueError, r"`class_labels` were given, but this prior is unconditional"),
    ("build batch mismatch", lambda o: o["prior"].build_input_ids(torch.zeros(2, 4, 4, dtype=torch.long), class_labels=torch.tensor([0])), ValueError, r"All inputs must share one batch size, got \{'batch_size': 2, 'class_labels': 1\}"),
    ("build batch_size=0", lambda o: o["unconditional"].build_input_ids(batch_size=0), ValueError, r"`batch_size` must be a positive integer, got 0"),
    ("build batch_size str", lambda o: o["unconditional"].build_input_ids(batch_size="2"), ValueError, r"`batch_size` must be a positive integer, got '2'"),
    ("build no batch", lambda o: o["unconditional"].build_input_ids(), ValueError, r"Cannot tell the batch size: pass `batch_size`"),
    ("sample temperature=0", lambda o: o["prior"].sample(class_labels=torch.tensor([0]), temperature=0.0), ValueError, r"`temperature` must be a positive finite number, got 0\.0"),
    ("sample temperature nan", lambda o: o["prior"].sample(class_labels=torch.tensor([0]), temperature=float("nan")), ValueError, r"`temperature` must be a positive finite number, got nan"),
    ("sample top_k=0", lambda o: o["prior"].sample(class_labels=torch.tensor([0]), top_k=0), ValueError, r"`top_k` must be None or an integer >= 1, got 0"),
    ("sample top_k=True", lambda o: o["prior"].sample(class_labels=torch.tensor([0]), top_k=True), ValueError, r"got True"),
    ("sample top_p=1.5", lambda o: o["prior"].sample(class_labels=torch.tensor([0]), top_p=1.5), ValueError, r"`top_p` must be None or a number in \(0, 1\], got 1\.5"),
    ("sample guidance<0", lambda o: o["prior"].sample(class_labels=torch.tensor([0]), guidance_scale=-1.0), ValueError, r"`guidance_scale` must be a non-negative finite number, got -1\.0"),
    ("sample guidance unconditional", lambda o: o["unconditional"].sample(batch_size=1, guidance_scale=2.0), ValueError, r"`guidance_scale=2\.0` needs a null class, but this prior has no classes"),
    ("sample decode_step str", lambda o: o["prior"].sample(class_labels=torch.tensor([0]), decode_step="static"), TypeError, r"`decode_step` must be a DecodeStep or None, got str"),
    ("sample 3-D prefix", lambda o: o["unconditional"].sample(prefix_indices=torch.zeros(1, 2, 2, dtype=torch.long)), ValueError, r"`prefix_indices` must have shape \(batch_size, k\), got \(1, 2, 2\)"),
    ("sample prefix out of range", lambda o: o["unconditional"].sample(prefix_indices=torch.full((1, 2), 99)), ValueError, r"must lie in \[0, 64\), got values in \[99, 99\]"),
    ("sample generator wrong type", lambda o: o["prior"].sample(class_labels=torch.tensor([0]), generator=0), TypeError, r"`generator` must be a torch\.Generator or None, got int"),
    ("pkeep out of range", lambda o: o["prior"].corrupt_image_tokens(torch.tensor([0]).reshape(1, 1), 1.5), ValueError, r"`pkeep` must be a probability in \[0, 1\], got 1\.5"),
    ("class dropout out of range", lambda o: o["prior"].drop_class_labels(torch.tensor([0]), 2.0), ValueError, r"`prob` must be a probability in \[0, 1\], got 2\.0"),
    ("class dropout unconditional", lambda o: o["unconditional"].drop_class_labels(torch.tensor([0]), 0.1), ValueError, r"needs a class-conditional prior, but `num_classes=0`"),
    ("forward past n_positions", lambda o: o["unconditional"](input_ids=torch.zeros(1, 18, dtype=torch.long)), ValueError, r"needs 18 positions, but the prior has n_positions=17"),
    ("build negative class", lambda o: o["prior"].build_input_ids(class_labels=torch.tensor([-1])), ValueError, r"`class_labels` must lie in \[0, 4\), got values in \[-1, -1\]"),
    ("generate out-of-vocab ids", lambda o: o["prior"].generate(torch.tensor([69]).reshape(1, 1), max_new_tokens=1, do_sample=False), ValueError, r"`input_ids` must lie in \[0, 69\), got values in \[69, 69\]"),
]
# fmt: on


@pytest.mark.parametrize("call, error, message", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_bad_inputs_get_errors_that_name_them(error_priors, call, error, message):
    with pytest.raises(error, match=message):
        call(error_priors)
