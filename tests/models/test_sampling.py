"""The one sampling loop of the prior (`hf_vqgan.models.sampling`): every decode step draws the same codes from the
same generator; the sliding window, the callback, the interrupt; no host syncs on the per-token path."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import testing_utils
from hf_vqgan.models import (
    KVCacheDecodeStep,
    NoCacheDecodeStep,
    SlidingWindowDecodeStep,
    StaticCacheDecodeStep,
    VQGANModel,
)
from hf_vqgan.models import sampling as sampling_module
from hf_vqgan.models.prior import VQGANPriorForCausalLM
from hf_vqgan.models.sampling import UNSAMPLED_CODE, _StaticDecoder, exponential_noise, sample_next_token
from testing_utils import seeded

K, H, W, NUM_CLASSES = 16, 3, 4, 5
T = H * W
# initializer_range wider than GPT-2's 0.02: peaked, context-dependent next-token distributions
PRIOR = dict(codebook_size=K, latent_height=H, latent_width=W, initializer_range=0.2)

CONDITIONINGS = {
    "unconditional": ({}, {"batch_size": 3}),
    "class": ({"num_classes": NUM_CLASSES}, {"class_labels": torch.tensor([0, 3, 4])}),
    "cond": (
        {"cond_codebook_size": 8, "cond_length": 3},
        {"cond_indices": torch.tensor([[0, 7, 3], [1, 1, 1], [5, 2, 6]])},
    ),
    "class+cond": (
        {"num_classes": NUM_CLASSES, "cond_codebook_size": 8, "cond_length": 3},
        {"class_labels": torch.tensor([1, 2, 0]), "cond_indices": torch.tensor([[0, 7, 3], [1, 1, 1], [5, 2, 6]])},
    ),
}
SETTINGS = {
    "plain": {},
    "greedy": {"top_k": 1},
    "temperature+top_k": {"temperature": 0.7, "top_k": 5},
    "top_p": {"top_p": 0.8},
    "guidance": {"guidance_scale": 3.0, "top_k": 8},
    "prefix": {"prefix_indices": torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3], [0, 0, 0, 0, 0]])},
}
STEPS = {
    "kv cache": KVCacheDecodeStep,
    "no cache": NoCacheDecodeStep,
    "static eager": lambda: StaticCacheDecodeStep(mode="eager"),
    "sliding window": SlidingWindowDecodeStep,  # on the trained grid the window is the whole sequence
}


def tiny_prior(**overrides) -> VQGANPriorForCausalLM:
    return testing_utils.tiny_prior(0, **{**PRIOR, **overrides})


class RefuseHostSyncs(TorchDispatchMode):
    # A device-to-host read (`.item()`, `.tolist()`, `if tensor:`) stalls the GPU and breaks CUDA-graph capture; on
    # CPU every such read goes through one of these ops, so refusing them here finds what a GPU would pay for.
    SYNCS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.SYNCS:
            raise RuntimeError(f"host sync on the per-token path: {func}")
        return func(*args, **(kwargs or {}))


# ----- every step, the same codes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_every_step_draws_the_codes_of_the_kv_cache_step(step, setting):
    model = tiny_prior(num_classes=NUM_CLASSES)
    kwargs = {"class_labels": torch.tensor([0, 3, 1]), **SETTINGS[setting]}
    reference = model.sample(**kwargs, generator=seeded(11))
    assert torch.equal(model.sample(**kwargs, generator=seeded(11), decode_step=STEPS[step]()), reference)
    if setting != "greedy":
        assert not torch.equal(reference, model.sample(**kwargs, generator=seeded(12)))  # the seed matters
    if "prefix_indices" in kwargs:
        assert torch.equal(reference.reshape(3, T)[:, :5], kwargs["prefix_indices"])


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("name", list(CONDITIONINGS))
def test_every_step_handles_every_conditioning(step, name):
    config, inputs = CONDITIONINGS[name]
    model = tiny_prior(**config)
    reference = model.sample(**inputs, top_p=0.9, generator=seeded(2))
    assert torch.equal(model.sample(**inputs, top_p=0.9, generator=seeded(2), decode_step=STEPS[step]()), reference)
    assert len(torch.unique(reference)) > 1  # the codes really depend on the context


def test_one_generator_draws_one_noise_tensor_per_code():
    # Each position takes batch_size * K Exp(1) numbers from the generator: the draw written out by hand with those
    # numbers and plain forwards gives the same codes.
    model = tiny_prior(num_classes=NUM_CLASSES)
    labels = torch.tensor([2, 4])
    generator = seeded(5)
    ids = model.build_input_ids(class_labels=labels)
    with torch.no_grad():
        for _ in range(T):
            probs = model(ids).logits[:, -1, :K].float().softmax(-1)
            noise = exponential_noise((2, K), generator, "cpu")
            ids = torch.cat([ids, (probs / noise).argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.sample(class_labels=labels, generator=seeded(5)), ids[:, 1:].reshape(2, H, W))


# ----- the sliding window --------------------------------------------------------------------------------------------


def sliding_window_by_hand(model, labels, grid, guidance_scale, generator, prefix=None) -> torch.LongTensor:
    """The pipeline's old sliding-window sampler, written out: build the window's ids, guide, draw."""
    config = model.config
    (height, width), (th, tw) = grid, (config.latent_height, config.latent_width)
    n = labels.shape[0]
    tokens = torch.zeros(n, height, width, dtype=torch.long)
    known = 0 if prefix is None else prefix.shape[1]
    if known:
        tokens.view(n, -1)[:, :known] = prefix
    for position in range(known, height * width):
        i, j = divmod(position, width)
        top, left = min(max(i - th // 2, 0), height - th), min(max(j - tw // 2, 0), width - tw)
        window = tokens[:, top : top + th, left : left + tw].reshape(n, -1)
        local = (i - top) * tw + (j - left)
        input_ids = model.build_input_ids(indices=window, class_labels=labels)[:, : config.prefix_length + local]
        null_ids = input_ids.clone()
        null_ids[:, config.prefix_length - 1] = config.null_class_token
        with torch.no_grad():
            logits = model(input_ids=torch.cat([input_ids, null_ids])).logits[:, -1].float()
        cond, uncond = logits.chunk(2)
        logits = torch.lerp(uncond, cond, guidance_scale)
        tokens[:, i, j] = sample_next_token(logits, config.image_token_range, top_k=8, generator=generator)
    return tokens


@pytest.mark.parametrize("grid", [(H, W + 3), (H + 2, W), (H + 3, W + 4)])
def test_sliding_window_follows_the_reference_sampler(grid):
    model = tiny_prior(num_classes=NUM_CLASSES)
    labels = torch.tensor([1, 4])
    prefix = torch.tensor([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]])
    expected = sliding_window_by_hand(model, labels, grid, 2.0, seeded(7), prefix)
    sampled = model.sample(
        class_labels=labels, prefix_indices=prefix, guidance_scale=2.0, top_k=8, generator=seeded(7), grid=grid
    )
    assert sampled.shape == (2, *grid)
    assert torch.equal(sampled, expected)


def test_sliding_window_is_the_default_beyond_the_trained_grid_and_refused_by_cached_steps():
    model = tiny_prior()
    grid = (H + 1, W + 1)
    default = model.sample(batch_size=2, generator=seeded(0), grid=grid)
    window = model.sample(batch_size=2, generator=seeded(0), grid=grid, decode_step=SlidingWindowDecodeStep())
    assert torch.equal(default, window) and default.min() >= 0
    for step in (KVCacheDecodeStep(), NoCacheDecodeStep(), StaticCacheDecodeStep(mode="eager")):
        with pytest.raises(ValueError, match="trained grid"):
            model.sample(batch_size=2, grid=grid, decode_step=step)
    with pytest.raises(ValueError, match="at least 3x4"):
        model.sample(batch_size=2, grid=(H, W - 1))


# ----- callback and interrupt ----------------------------------------------------------------------------------------


def test_callback_reports_each_code_with_the_given_prefix():
    model = tiny_prior(num_classes=NUM_CLASSES)
    prefix = torch.tensor([[1, 2], [3, 4]])
    reports = []
    samples = model.sample(
        class_labels=torch.tensor([2, 4]),
        prefix_indices=prefix,
        generator=seeded(0),
        callback=lambda step, tokens: reports.append((step, tokens)),
    )
    assert [step for step, _ in reports] == list(range(T - 2))
    for step, tokens in reports:
        assert torch.equal(tokens, samples.reshape(2, T)[:, : 2 + step + 1])
    reports[0][1].fill_(0)  # a copy: editing it in place changes nothing
    assert torch.equal(reports[-1][1], samples.reshape(2, T))


@pytest.mark.parametrize("step", list(STEPS))
def test_callback_replacement_conditions_every_later_code(step):
    # Replacing the codes after step 3 must give what sampling from those codes as a prefix gives, with the generator
    # at the same point (one (B, K) noise tensor per code drawn so far).
    model = tiny_prior(num_classes=NUM_CLASSES)
    labels = torch.tensor([0, 3])
    replacement = torch.tensor([[5, 5, 5, 5], [7, 0, 7, 0]])

    def replace(index, tokens):
        return replacement if index == 3 else None

    kwargs = {"class_labels": labels, "guidance_scale": 2.0}
    edited = model.sample(**kwargs, generator=seeded(4), callback=replace, decode_step=STEPS[step]())
    generator = seeded(4)
    for _ in range(4):
        exponential_noise((2, K), generator, "cpu")
    expected = model.sample(**kwargs, prefix_indices=replacement, generator=generator)
    assert torch.equal(edited, expected)
    assert not torch.equal(edited, model.sample(**kwargs, generator=seeded(4)))  # the edit changed later codes
    with pytest.raises(ValueError, match="callback"):
        model.sample(**kwargs, callback=lambda index, tokens: tokens[:, :-1])


@pytest.mark.parametrize("step", list(STEPS))
def test_interrupt_stops_before_the_next_code(step):
    model = tiny_prior()
    full = model.sample(batch_size=2, generator=seeded(1))
    asked, reports = [], []

    def interrupt() -> bool:
        asked.append(True)
        return len(asked) > 5  # True before the sixth code

    partial = model.sample(
        batch_size=2,
        generator=seeded(1),
        decode_step=STEPS[step](),
        interrupt=interrupt,
        callback=lambda index, tokens: reports.append(index),
    )
    assert len(asked) == 6 and reports == list(range(5))
    assert torch.equal(partial.reshape(2, T)[:, :5], full.reshape(2, T)[:, :5])
    assert torch.all(partial.reshape(2, T)[:, 5:] == UNSAMPLED_CODE)
    assert torch.equal(model.sample(batch_size=2, generator=seeded(1), interrupt=lambda: False), full)


# ----- no host syncs per token ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", list(STEPS))
def test_the_loop_reads_nothing_back_to_the_host(step, monkeypatch):
    model = tiny_prior(num_classes=NUM_CLASSES)
    loop = sampling_module.run_sampling_loop
    calls = []

    def refusing_syncs(*args, **kwargs):
        calls.append(True)
        # On CPU `.tolist()` reads memory without a dispatched op, so it is refused by hand, as `.item()`.
        with mock.patch.object(torch.Tensor, "item", refuse), mock.patch.object(torch.Tensor, "tolist", refuse):
            with RefuseHostSyncs():
                return loop(*args, **kwargs)

    def refuse(self, *args):
        pytest.fail("a tensor read back to the host inside the sampling loop")

    monkeypatch.setattr("hf_vqgan.models.prior.run_sampling_loop", refusing_syncs)
    kwargs = {"class_labels": torch.tensor([1, 2]), "guidance_scale": 2.0, "top_k": 6, "top_p": 0.9}
    codes = model.sample(**kwargs, generator=seeded(0), decode_step=STEPS[step](), callback=lambda i, t: None)
    assert calls and codes.shape == (2, H, W)
    monkeypatch.undo()
    assert torch.equal(codes, model.sample(**kwargs, generator=seeded(0)))


def test_training_paths_read_nothing_back_with_validate_false(monkeypatch):
    model = tiny_prior(num_classes=NUM_CLASSES)
    indices, labels = torch.randint(0, K, (2, H, W), generator=seeded(0)), torch.tensor([0, 4])
    checked = model.build_input_ids(indices, class_labels=labels)
    # On CPU `.tolist()` reads memory without a dispatched op, so it is refused by hand.
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: pytest.fail("range check on the training path"))
    with RefuseHostSyncs():
        input_ids = model.build_input_ids(indices, class_labels=labels, validate=False)
        dropped = model.drop_class_labels(labels, 0.5, generator=seeded(1), validate=False)
        loss = model(input_ids, labels=model.image_token_labels(input_ids)).loss
    assert torch.equal(input_ids, checked)
    assert dropped.shape == (2,) and torch.isfinite(loss)
    with pytest.raises(pytest.fail.Exception, match="range check"):
        model.build_input_ids(indices, class_labels=labels)  # the default checks the ranges


def test_decode_indices_checks_the_indices_once(tiny_vqgan_config):
    vqgan = VQGANModel(**tiny_vqgan_config).eval()
    reads = []

    class CountHostReads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            reads.append(func) if func in RefuseHostSyncs.SYNCS else None
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), CountHostReads():
        vqgan.decode_indices(torch.zeros(1, 4, 4, dtype=torch.long))
    assert len(reads) <= 2  # min and max, read together (one per value at most on CPU)
    with pytest.raises(ValueError, match=r"must lie in \[0, 64\), got values in \[0, 64\]"):
        vqgan.decode_indices(torch.tensor([[[0, 64]]]))


# ----- the static-cache captured step --------------------------------------------------------------------------------


def test_static_step_traces_as_one_graph_and_is_reused():
    # fullgraph=True fails on any graph break (host syncs, data-dependent Python): the step can be captured whole.
    # The "eager" dynamo backend checks the trace without paying for code generation.
    model = tiny_prior(num_classes=NUM_CLASSES)
    step = StaticCacheDecodeStep(mode="compile", compile_kwargs={"backend": "eager", "fullgraph": True})
    labels = torch.tensor([0, 3])
    for seed in (5, 6):
        kwargs = {"class_labels": labels, "guidance_scale": 2.0, "top_p": 0.9}
        assert torch.equal(
            model.sample(**kwargs, generator=seeded(seed), decode_step=step),
            model.sample(**kwargs, generator=seeded(seed)),
        )
    assert len(step.setup_seconds) == 1  # one step per configuration, prepared once
    model.sample(class_labels=labels, top_k=1, decode_step=step)
    assert len(step.setup_seconds) == 2


def test_static_step_reads_nothing_back_to_the_host(monkeypatch):
    model = tiny_prior(num_classes=NUM_CLASSES)
    steps = []
    eager_step = _StaticDecoder._eager_step

    def refusing_syncs(self, token_ids, noise):
        with RefuseHostSyncs():
            steps.append(eager_step(self, token_ids, noise))
        return steps[-1]

    monkeypatch.setattr(_StaticDecoder, "_eager_step", refusing_syncs)
    kwargs = {"class_labels": torch.tensor([1, 2]), "guidance_scale": 2.0, "top_k": 6, "top_p": 0.9}
    fast = model.sample(**kwargs, generator=seeded(0), decode_step=StaticCacheDecodeStep(mode="eager"))
    assert len(steps) == T - 1  # every code after the prefill's
    assert torch.equal(fast, model.sample(**kwargs, generator=seeded(0)))


@pytest.mark.slow
def test_inductor_compiled_static_step_equals_the_kv_cache_step():
    model = tiny_prior(num_classes=NUM_CLASSES)
    step = StaticCacheDecodeStep(mode="compile")  # inductor, CPU code generation (~30 s on a loaded CPU)
    kwargs = {"class_labels": torch.tensor([1, 4]), "guidance_scale": 2.0, "top_k": 6}
    fast = model.sample(**kwargs, generator=seeded(3), decode_step=step)
    assert torch.equal(fast, model.sample(**kwargs, generator=seeded(3)))


def test_static_step_validates_its_arguments():
    model = tiny_prior()
    with pytest.raises(ValueError, match="mode"):
        StaticCacheDecodeStep(mode="fast")
    with pytest.raises(TypeError, match="DecodeStep"):
        model.sample(batch_size=2, decode_step="static")
    with pytest.raises(ValueError, match="cuda_graph"):
        model.sample(batch_size=2, decode_step=StaticCacheDecodeStep(mode="cuda_graph"))
    with pytest.raises(ValueError, match="null class"):
        model.sample(batch_size=2, guidance_scale=2.0, decode_step=StaticCacheDecodeStep(mode="eager"))
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    add_hook_to_module(model, ModelHook())  # what model CPU offload attaches
    with pytest.raises(ValueError, match="offload"):
        model.sample(batch_size=2, decode_step=StaticCacheDecodeStep(mode="eager"))
    remove_hook_from_module(model)


def test_static_step_keeps_training_mode_and_full_prefix():
    model = tiny_prior(resid_pdrop=0.5).train()
    step = StaticCacheDecodeStep(mode="eager")
    assert torch.equal(
        model.sample(batch_size=2, top_k=1, decode_step=step), model.eval().sample(batch_size=2, top_k=1)
    )
    model.train()
    full = torch.randint(0, K, (2, T), generator=seeded(1))
    assert torch.equal(model.sample(prefix_indices=full, decode_step=step), full.reshape(2, H, W))
    assert model.training


def test_one_static_step_serves_two_priors():
    first, second = tiny_prior(num_classes=NUM_CLASSES), tiny_prior(num_classes=NUM_CLASSES, initializer_range=0.3)
    step = StaticCacheDecodeStep(mode="eager")
    labels = torch.tensor([0, 1])
    for model in (first, second, first):
        fast = model.sample(class_labels=labels, generator=seeded(0), decode_step=step)
        assert torch.equal(fast, model.sample(class_labels=labels, generator=seeded(0)))
    assert len(step.setup_seconds) == 2
