"""The optimised paths give the plain paths' results (issue 8: "nothing may change results beyond bf16 tolerance").

- fast sampling (`hf_vqgan.models.fast_sampling`): the captured decode step draws exactly the tokens `sample()` draws
  from the same generator, greedy or not, with guidance, prefixes and conditions, also when traced whole by dynamo;
- training (`hf_vqgan.training.speedups`): gradient checkpointing, channels-last and the single-backward generator
  step leave losses and gradients unchanged;
- inference (benchmarks/vqgan_inference.py): batched, channels-last tokenising and reconstruction match the plain
  verbs.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hf_vqgan import VQGANModel
from hf_vqgan.losses import VQGANLoss
from hf_vqgan.models.fast_sampling import FastImageSampler, _Decoder
from hf_vqgan.models.prior import VQGANPriorConfig, VQGANPriorForCausalLM
from hf_vqgan.pipelines.pipeline_vqgan_transformer import VQGANTransformerPipeline
from hf_vqgan.training.speedups import prepare_vqgan_for_training

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the inference helpers the benchmarks time
from vqgan_inference import prepare_vqgan_for_inference, reconstruct_images, tokenize_images  # noqa: E402

K, H, W, NUM_CLASSES = 16, 3, 4, 5
T = H * W


def tiny_prior(**overrides) -> VQGANPriorForCausalLM:
    kwargs = dict(codebook_size=K, latent_height=H, latent_width=W, n_embd=32, n_layer=2, n_head=4)
    kwargs["initializer_range"] = 0.2  # peaked, context-dependent next-token distributions
    kwargs.update(overrides)
    torch.manual_seed(0)
    return VQGANPriorForCausalLM(VQGANPriorConfig(**kwargs)).eval()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def one_torch_thread():
    # Tiny models gain nothing from intra-op threads, which only spin on a shared CPU.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


CONDITIONINGS = {
    "unconditional": ({}, {"batch_size": 3}),
    "class": ({"num_classes": NUM_CLASSES}, {"class_labels": torch.tensor([0, 3, 4])}),
    "class+cond": (
        {"num_classes": NUM_CLASSES, "cond_codebook_size": 8, "cond_length": 3},
        {"class_labels": torch.tensor([1, 2, 0]), "cond_indices": torch.tensor([[0, 7, 3], [1, 1, 1], [5, 2, 6]])},
    ),
}


# ----------------------------------------------------------------------------------------------- fast sampling
@pytest.mark.parametrize("name", list(CONDITIONINGS))
def test_fast_greedy_decoding_equals_sample(name):
    config, inputs = CONDITIONINGS[name]
    model = tiny_prior(**config)
    fast = FastImageSampler(model, mode="eager").sample(**inputs, top_k=1)
    plain = model.sample(**inputs, top_k=1)
    assert torch.equal(fast, plain)
    assert len(torch.unique(plain)) > 1  # the tokens really depend on the context


SAMPLING_SETTINGS = {
    "plain": {},
    "temperature+top_k": {"temperature": 0.7, "top_k": 5},
    "top_p": {"top_p": 0.8},
    "guidance": {"guidance_scale": 3.0, "top_k": 8},
    "prefix": {"prefix_indices": torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3], [0, 0, 0, 0, 0]])},
}


@pytest.mark.parametrize("setting", list(SAMPLING_SETTINGS))
def test_fast_sampling_draws_the_tokens_sample_draws(setting):
    model = tiny_prior(num_classes=NUM_CLASSES)
    kwargs = {"class_labels": torch.tensor([0, 3, 1]), **SAMPLING_SETTINGS[setting]}
    fast = FastImageSampler(model, mode="eager").sample(**kwargs, generator=seeded(11))
    plain = model.sample(**kwargs, generator=seeded(11))
    assert torch.equal(fast, plain)
    assert not torch.equal(fast, model.sample(**kwargs, generator=seeded(12)))  # the seed matters


def test_fast_sampling_reports_each_token_like_sample():
    model = tiny_prior(num_classes=NUM_CLASSES)
    kwargs = {"class_labels": torch.tensor([2, 4]), "prefix_indices": torch.tensor([[1, 2], [3, 4]])}
    reports = {"fast": [], "plain": []}
    for name, sampler in (("fast", FastImageSampler(model, mode="eager")), ("plain", model)):
        sampler.sample(**kwargs, generator=seeded(0), callback=lambda s, t, r=reports[name]: r.append((s, t.clone())))
    assert [s for s, _ in reports["fast"]] == list(range(T - 2))
    for (step_a, tokens_a), (step_b, tokens_b) in zip(reports["fast"], reports["plain"], strict=True):
        assert step_a == step_b and torch.equal(tokens_a, tokens_b)


def test_decode_step_traces_as_one_graph_and_is_reused():
    # fullgraph=True fails on any graph break (host syncs, data-dependent Python): the step can be captured whole.
    # The "eager" dynamo backend checks the trace without paying for code generation.
    model = tiny_prior(num_classes=NUM_CLASSES)
    sampler = FastImageSampler(model, mode="compile", compile_kwargs={"backend": "eager", "fullgraph": True})
    labels = torch.tensor([0, 3])
    for seed in (5, 6):
        kwargs = {"class_labels": labels, "guidance_scale": 2.0, "top_p": 0.9}
        assert torch.equal(
            sampler.sample(**kwargs, generator=seeded(seed)), model.sample(**kwargs, generator=seeded(seed))
        )
    assert len(sampler.setup_seconds) == 1  # one step per configuration, prepared once
    sampler.sample(class_labels=labels, top_k=1)
    assert len(sampler.setup_seconds) == 2


class _RefuseHostSyncs(TorchDispatchMode):
    # A device-to-host read (`.item()`, `if tensor:`) breaks CUDA-graph capture; on CPU every such read goes through
    # one of these ops, so refusing them here finds what capture would refuse on a GPU.
    SYNCS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.SYNCS:
            raise RuntimeError(f"host sync in the decode step: {func}")
        return func(*args, **(kwargs or {}))


def test_decode_step_reads_nothing_back_to_the_host(monkeypatch):
    model = tiny_prior(num_classes=NUM_CLASSES)
    steps = []
    eager_step = _Decoder._eager_step

    def refusing_syncs(self, token_ids, noise):
        with _RefuseHostSyncs():
            steps.append(eager_step(self, token_ids, noise))
        return steps[-1]

    monkeypatch.setattr(_Decoder, "_eager_step", refusing_syncs)
    kwargs = {"class_labels": torch.tensor([1, 2]), "guidance_scale": 2.0, "top_k": 6, "top_p": 0.9}
    fast = FastImageSampler(model, mode="eager").sample(**kwargs, generator=seeded(0))
    assert len(steps) == T - 1  # every token after the prefill's
    assert torch.equal(fast, model.sample(**kwargs, generator=seeded(0)))


@pytest.mark.slow
def test_inductor_compiled_decode_step_equals_sample():
    model = tiny_prior(num_classes=NUM_CLASSES)
    sampler = FastImageSampler(model, mode="compile")  # inductor, CPU code generation (~30 s on a loaded CPU)
    kwargs = {"class_labels": torch.tensor([1, 4]), "guidance_scale": 2.0, "top_k": 6}
    assert torch.equal(sampler.sample(**kwargs, generator=seeded(3)), model.sample(**kwargs, generator=seeded(3)))


def test_fast_sampler_validates_its_arguments():
    model = tiny_prior()
    with pytest.raises(ValueError, match="mode"):
        FastImageSampler(model, mode="fast")
    with pytest.raises(TypeError, match="VQGANPriorForCausalLM"):
        FastImageSampler(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="cuda_graph"):
        FastImageSampler(model, mode="cuda_graph").sample(batch_size=2)
    with pytest.raises(ValueError, match="null class"):
        FastImageSampler(model, mode="eager").sample(batch_size=2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="top_k"):
        FastImageSampler(model, mode="eager").sample(batch_size=2, top_k=0)
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    add_hook_to_module(model, ModelHook())  # what model CPU offload attaches
    with pytest.raises(ValueError, match="offload"):
        FastImageSampler(model, mode="eager").sample(batch_size=2)
    remove_hook_from_module(model)


def test_fast_sampler_keeps_training_mode_and_full_prefix():
    model = tiny_prior(resid_pdrop=0.5).train()
    sampler = FastImageSampler(model, mode="eager")
    assert torch.equal(sampler.sample(batch_size=2, top_k=1), model.eval().sample(batch_size=2, top_k=1))
    model.train()
    full = torch.randint(0, K, (2, T), generator=seeded(1))
    assert torch.equal(sampler.sample(prefix_indices=full), full.reshape(2, H, W))
    assert model.training


def tiny_vqgan_config(**overrides) -> dict:
    config = dict(base_channels=32, channel_multipliers=(1, 2), attention_resolutions=(16,), sample_size=32,
                  latent_channels=16, code_dim=8, codebook_size=64, norm_num_groups=8)  # fmt: skip
    config.update(overrides)
    return config


def test_pipeline_fast_decode_gives_the_same_images():
    torch.manual_seed(0)
    vqgan = VQGANModel(**tiny_vqgan_config(codebook_size=K)).eval()
    prior = tiny_prior(num_classes=NUM_CLASSES)  # "latent" output: the prior's 3x4 grid, the tokenizer only decodes
    pipe = VQGANTransformerPipeline(vqgan=vqgan, transformer=prior)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(class_labels=[1, 3], guidance_scale=2.0, output_type="latent")
    plain = pipe(**kwargs, generator=seeded(0)).images
    pipe.enable_fast_decode(mode="eager")
    fast = pipe(**kwargs, generator=seeded(0)).images
    assert torch.equal(fast, plain)
    pipe.disable_fast_decode()
    assert torch.equal(pipe(**kwargs, generator=seeded(0)).images, plain)


# --------------------------------------------------------------------------------------------------- training
def assert_gradients_match(grads: dict, reference: dict, rtol: float = 1e-5) -> None:
    """Per tensor, in norm: fused or reordered float sums move gradients by ~1e-6 relative. The absolute floor covers
    attention key biases, whose exact gradient is 0 (softmax ignores a shift shared by all keys) and whose computed
    one is ~1e-9 of noise on either path."""
    assert grads.keys() == reference.keys()
    for name, grad in grads.items():
        error = (grad - reference[name]).norm()
        assert error <= rtol * reference[name].norm() + 1e-8, (name, float(error))


def loss_and_grads(model: VQGANModel, pixels: torch.Tensor, seed: int = 1):
    torch.manual_seed(seed)  # the same dropout masks in both runs
    out = model(pixels)
    loss = (out.sample - pixels).abs().mean() + out.quantizer_loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    plain = VQGANModel(**tiny_vqgan_config(dropout=0.1)).train()  # dropout: the recomputation must replay masks
    checkpointed = copy.deepcopy(plain)
    checkpointed.enable_gradient_checkpointing()
    assert checkpointed.encoder.gradient_checkpointing and checkpointed.decoder.gradient_checkpointing
    pixels = torch.rand(2, 3, 32, 32, generator=seeded(0)) * 2 - 1
    loss_a, grads_a = loss_and_grads(plain, pixels)
    loss_b, grads_b = loss_and_grads(checkpointed, pixels)
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(plain.parameters()))
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=0, atol=1e-6, msg=name)


def test_channels_last_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = VQGANModel(**tiny_vqgan_config()).train()
    nhwc = copy.deepcopy(plain)
    prepare_vqgan_for_training(nhwc, channels_last=True)
    assert nhwc.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    pixels = torch.rand(2, 3, 32, 32, generator=seeded(0)) * 2 - 1
    loss_a, grads_a = loss_and_grads(plain, pixels)
    loss_b, grads_b = loss_and_grads(nhwc, pixels)
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=1e-5)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-5, msg=name)
    with torch.no_grad():
        out_a, out_b = plain.eval()(pixels), nhwc.eval()(pixels.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out_b.sample, out_a.sample, rtol=0, atol=1e-5)
    assert (out_b.indices == out_a.indices).float().mean() > 0.99  # only near-ties may flip


@pytest.fixture(scope="module")
def loss_with_lpips_and_gan(tmp_path_factory) -> VQGANLoss:
    # Built once: LPIPS constructs a whole VGG16, which is slow on a shared CPU; its backbone is random.
    from random_vgg16 import random_vgg16_weights

    weights = random_vgg16_weights(tmp_path_factory)
    torch.manual_seed(0)
    return VQGANLoss(lpips_vgg_weights_path=weights, disc_start=1, disc_num_layers=2, disc_base_channels=16)


@pytest.mark.slow
def test_compiled_encoder_and_decoder_train_like_eager(one_torch_thread):
    # Inductor generates CPU code for the forward and backward graphs: ~40 s on a shared 2-core CPU.
    torch.manual_seed(0)
    eager = VQGANModel(**tiny_vqgan_config(base_channels=16, norm_num_groups=4)).train()
    compiled = copy.deepcopy(eager)
    prepare_vqgan_for_training(compiled, compile=True)
    pixels = torch.rand(2, 3, 32, 32, generator=seeded(0)) * 2 - 1
    loss_a, grads_a = loss_and_grads(eager, pixels)
    loss_b, grads_b = loss_and_grads(compiled, pixels)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    assert_gradients_match(grads_b, grads_a)


@pytest.mark.parametrize("gan_on", [False, True], ids=["before_disc_start", "with_gan"])
def test_single_backward_generator_loss_equals_the_plain_loss(gan_on, loss_with_lpips_and_gan):
    torch.manual_seed(0)
    model = VQGANModel(**tiny_vqgan_config()).train()
    loss_fn = loss_with_lpips_and_gan
    pixels = torch.rand(2, 3, 32, 32, generator=seeded(0)) * 2 - 1
    step = 1 if gan_on else 0
    disc_state = copy.deepcopy(loss_fn.discriminator.state_dict())  # BatchNorm statistics move with each forward

    out = model(pixels)
    plain = loss_fn.generator_loss(pixels, out.sample, out.quantizer_loss, step, last_layer=model.last_layer_weight)
    plain.total.backward()
    plain_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    loss_fn.discriminator.zero_grad(set_to_none=True)  # the plain backward also reaches the discriminator

    loss_fn.discriminator.load_state_dict(disc_state)
    out = model(pixels)
    fast = loss_fn.generator_loss(
        pixels, out.sample, out.quantizer_loss, step, last_layer=model.last_layer_weight, single_backward=True
    )
    assert fast.disc_factor == plain.disc_factor == (1.0 if gan_on else 0.0)
    for term in ("total", "pixel", "perceptual", "reconstruction", "gan", "adaptive_weight", "quantizer"):
        torch.testing.assert_close(getattr(fast, term).detach(), getattr(plain, term).detach(), rtol=1e-5, atol=1e-7)
    if gan_on:
        assert plain.adaptive_weight > 0
    (0.25 * fast.total).backward()  # a scaled total (gradient accumulation) scales every gradient
    # Summing the gradient at the reconstruction before the decoder's backward reorders float additions.
    assert_gradients_match({name: p.grad / 0.25 for name, p in model.named_parameters()}, plain_grads)
    assert all(p.grad is None for p in loss_fn.discriminator.parameters())


def test_single_backward_falls_back_to_the_plain_loss_without_a_graph():
    torch.manual_seed(0)
    model = VQGANModel(**tiny_vqgan_config()).train()
    loss_fn = VQGANLoss(perceptual_weight=0, disc_weight=0.8, disc_start=0, disc_base_channels=8, disc_num_layers=2)
    pixels = torch.rand(2, 3, 32, 32, generator=seeded(0)) * 2 - 1
    with torch.no_grad():  # evaluation: no adaptive weight, nothing to differentiate
        out = model(pixels)
        plain = loss_fn.generator_loss(pixels, out.sample, out.quantizer_loss, 5)
        fast = loss_fn.generator_loss(pixels, out.sample, out.quantizer_loss, 5, single_backward=True)
    torch.testing.assert_close(fast.total, plain.total)
    assert float(fast.adaptive_weight) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        loss_fn.generator_loss(pixels, out.sample[:, :1], out.quantizer_loss, 0, single_backward=True)
    with pytest.raises(ValueError, match="last_layer"):
        loss_fn.generator_loss(pixels, model(pixels).sample, out.quantizer_loss, 5, single_backward=True)


def run_train_script(argv: list[str], monkeypatch) -> dict[int, dict]:
    """`examples/train.py main(argv)` in this process; returns the per-step training logs."""
    import importlib.util

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    spec = importlib.util.spec_from_file_location("hf_vqgan_train_for_speed_flags", REPO / "examples" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    logs, original_log = {}, Accelerator.log

    def recording_log(self, values, step=None, log_kwargs=None):
        logs.setdefault(step, {}).update(values)
        return original_log(self, values, step=step, log_kwargs=log_kwargs or {})

    monkeypatch.setattr(Accelerator, "log", recording_log)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    try:
        assert script.main([str(a) for a in argv]) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return logs


@pytest.mark.parametrize("accumulation", [1, 2])
def test_train_script_speed_flags_train_the_same_model(accumulation, tmp_path, monkeypatch, one_torch_thread):
    config = tmp_path / "vqgan.json"
    config.write_text(json.dumps(dict(in_channels=1, out_channels=1, base_channels=8, channel_multipliers=[1, 2],
                                      num_res_blocks=1, attention_resolutions=[8], sample_size=16, latent_channels=8,
                                      code_dim=4, codebook_size=16, norm_num_groups=4, dropout=0.1)))  # fmt: skip
    common = ["vqgan", "--model_config", config, "--max_train_steps", 3, "--train_batch_size", 8,
              "--max_train_samples", 24, "--perceptual_weight", 0, "--disc_start", 1, "--disc_num_layers", 2,
              "--disc_base_channels", 8, "--validation_steps", 3, "--checkpointing_steps", 3, "--logging_steps", 1,
              "--learning_rate", 1e-3, "--report_to", "none", "--gradient_accumulation_steps", accumulation]  # fmt: skip
    # Reference: taming's generator step (two backward passes through the discriminator), no speed flags. Fast: the
    # default single backward, channels-last and gradient checkpointing.
    plain = run_train_script(
        [*common, "--output_dir", tmp_path / "plain", "--generator_backward", "plain"], monkeypatch
    )
    fast = run_train_script(
        [*common, "--output_dir", tmp_path / "fast", "--channels_last", "--gradient_checkpointing"], monkeypatch
    )
    assert sorted(plain) == sorted(fast) == [1, 2, 3]
    for step in (1, 2, 3):  # the GAN (and its adaptive weight) is on from the second step
        for key in ("total", "pixel", "quantizer", "gan", "adaptive_weight", "disc_loss", "disc_logits_fake"):
            if key.startswith("disc_") and step == 1:
                continue
            assert math.isclose(fast[step][key], plain[step][key], rel_tol=1e-4, abs_tol=1e-6), (step, key)
    assert plain[3]["total"] != plain[1]["total"]  # the runs did train
    reloaded = VQGANModel.from_pretrained(tmp_path / "fast")  # channels-last weights save and load
    assert reloaded.encoder.conv_in.weight.is_contiguous()


# -------------------------------------------------------------------------------------------------- inference
def test_fast_tokenize_and_reconstruct_match_the_plain_verbs():
    torch.manual_seed(0)
    plain = VQGANModel(**tiny_vqgan_config()).eval()
    fast = prepare_vqgan_for_inference(copy.deepcopy(plain))
    assert not any(p.requires_grad for p in fast.parameters())
    pixels = torch.rand(5, 3, 32, 32, generator=seeded(0)) * 2 - 1
    with torch.no_grad():
        indices = plain.tokenize(pixels)
        reconstruction = plain(pixels).sample
    fast_indices = tokenize_images(fast, pixels, batch_size=2)  # batches of 2, 2, 1
    assert fast_indices.shape == indices.shape and (fast_indices == indices).float().mean() > 0.99
    torch.testing.assert_close(reconstruct_images(fast, pixels, batch_size=2), reconstruction, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------- benchmarks
def test_gpu_benchmark_script_runs_tiny_on_cpu(tmp_path):
    output = tmp_path / "raw.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}  # tiny sizes: threads only spin
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--tiny", "--output", str(output)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = output.read_text()
    for figure in ("sampling", "re-run the prefix", "generate() dynamic cache", "captured decode",
                   "training step", "encode+decode"):  # fmt: skip
        assert figure in text, figure
    assert "ERROR" not in text
