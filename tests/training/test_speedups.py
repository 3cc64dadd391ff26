"""Result-preserving training speed-ups (`hf_vqgan.training.speedups`, the single-backward generator loss, the
training script's speed flags): gradient checkpointing, channels-last, compilation and the single backward leave
losses and gradients unchanged up to float rounding."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from hf_vqgan import VQGANModel
from hf_vqgan.losses import VQGANLoss
from hf_vqgan.training.speedups import prepare_vqgan_for_training
from testing_utils import seeded, small_vqgan_config, vqgan_config

REPO = Path(__file__).resolve().parents[2]


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
    plain = VQGANModel(**vqgan_config(dropout=0.1)).train()  # dropout: the recomputation must replay masks
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
    plain = VQGANModel(**vqgan_config()).train()
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
def loss_with_lpips_and_gan(random_vgg16_file) -> VQGANLoss:
    # Built once: LPIPS constructs a whole VGG16, which is slow on a shared CPU; its backbone is random.
    torch.manual_seed(0)
    return VQGANLoss(lpips_vgg_weights_path=random_vgg16_file, disc_start=1, disc_num_layers=2, disc_base_channels=16)


@pytest.mark.slow
def test_compiled_encoder_and_decoder_train_like_eager():
    # Inductor generates CPU code for the forward and backward graphs: ~40 s on a shared 2-core CPU.
    torch.manual_seed(0)
    eager = VQGANModel(**vqgan_config(base_channels=16, norm_num_groups=4)).train()
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
    model = VQGANModel(**vqgan_config()).train()
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
    model = VQGANModel(**vqgan_config()).train()
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
def test_train_script_speed_flags_train_the_same_model(accumulation, tmp_path, monkeypatch):
    config = tmp_path / "vqgan.json"
    config.write_text(json.dumps(small_vqgan_config(attention_resolutions=[8], dropout=0.1)))
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
