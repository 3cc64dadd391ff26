"""Invariants of `VectorQuantizer`, each on a handful of vectors.

Shapes: B batch, D code dimension, h/w latent grid, N = B*h*w vectors, K codebook size.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_vqgan.models.quantizer import IndexRemap, VectorQuantizer

K, D = 32, 8


def flat(latents: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (N, D), in the quantizer's row order."""
    return latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])


def set_codebook(quantizer: VectorQuantizer, codes: torch.Tensor) -> None:
    """Overwrite the codebook, keeping the EMA sums consistent with it (code = sum / count, counts as they are)."""
    with torch.no_grad():
        quantizer.embedding.weight.copy_(codes)
        if quantizer.use_ema:
            quantizer.ema_embed_sum.copy_(codes * quantizer.ema_cluster_size[:, None])


def make_quantizer(**kwargs) -> VectorQuantizer:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(**{"codebook_size": K, "code_dim": D, **kwargs})
    # Spread the codes out (the default init sits within +-1/K) so that nearest neighbours are well separated.
    set_codebook(quantizer, torch.randn(quantizer.table_size, quantizer.code_dim))
    return quantizer


# ------------------------------------------------------------------------------------------------ lookup
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("l2_normalize", [False, True])
def test_nearest_code_matches_brute_force(l2_normalize, training):
    quantizer = make_quantizer(l2_normalize=l2_normalize).train(training)
    latents = torch.randn(2, D, 3, 5)
    codes = quantizer.embedding.weight.detach().clone()  # (K, D)

    out = quantizer(latents)

    z, e = flat(latents).double(), codes.double()
    if l2_normalize:  # cosine similarity: the largest dot product of unit vectors
        expected = (F.normalize(z, dim=-1) @ F.normalize(e, dim=-1).t()).argmax(dim=1)
        expected_codes = F.normalize(e, dim=-1)[expected]
    else:
        expected = torch.cdist(z, e).argmin(dim=1)
        expected_codes = e[expected]
    assert out.indices.shape == (2, 3, 5) and out.indices.dtype == torch.long
    assert torch.equal(out.indices, expected.reshape(2, 3, 5))
    # The straight-through sum z + (e - z) rounds, so the codes come back to within float32 precision.
    torch.testing.assert_close(flat(out.quantized).double(), expected_codes, rtol=0, atol=1e-5)


@pytest.mark.parametrize("l2_normalize", [False, True])
def test_lookup_returns_codebook_rows(l2_normalize):
    quantizer = make_quantizer(l2_normalize=l2_normalize)
    indices = torch.randint(0, K, (2, 3, 5))
    codes = quantizer.lookup(indices)  # (B, D, h, w)
    assert codes.shape == (2, D, 3, 5)
    assert torch.equal(flat(codes), quantizer.codebook()[indices.flatten()])


def test_l2_normalized_codes_have_unit_norm():
    quantizer = make_quantizer(l2_normalize=True)
    with torch.no_grad():  # rows of very different lengths, so that normalisation has something to do
        quantizer.embedding.weight.mul_(torch.rand(K, 1) * 10 + 0.1)
    codes = quantizer.lookup(torch.randint(0, K, (2, 3, 5)))
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(2, 3, 5), rtol=0, atol=1e-6)
    out = quantizer(torch.randn(2, D, 3, 5) * 7)
    torch.testing.assert_close(out.quantized.norm(dim=1), torch.ones(2, 3, 5), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("use_ema", [False, True])
def test_straight_through_gradient_is_identity(use_ema, dtype):
    quantizer = make_quantizer(use_ema=use_ema).train()
    latents = torch.randn(2, D, 3, 5, dtype=dtype, requires_grad=True)
    out = quantizer(latents)
    assert out.quantized.dtype == dtype
    upstream = torch.randn_like(out.quantized)
    out.quantized.backward(upstream)
    assert torch.equal(latents.grad, upstream)


@pytest.mark.parametrize("legacy_beta", [False, True])
def test_beta_weights_the_documented_term(legacy_beta):
    beta = 0.3
    quantizer = make_quantizer(beta=beta, legacy_beta=legacy_beta)
    latents = torch.randn(2, D, 3, 5, requires_grad=True)
    weight = quantizer.embedding.weight
    out = quantizer(latents)

    # Both terms have the value ||z - e||^2; only their stop-gradients differ, so gradients tell them apart.
    distance = F.mse_loss(flat(latents), weight[out.indices.flatten()])
    torch.testing.assert_close(out.codebook_loss, distance)
    torch.testing.assert_close(out.commitment_loss, distance)
    codebook_weight, commitment_weight = (beta, 1.0) if legacy_beta else (1.0, beta)
    torch.testing.assert_close(out.loss, codebook_weight * out.codebook_loss + commitment_weight * out.commitment_loss)

    grad_latents, grad_codes = torch.autograd.grad(out.loss, [latents, weight], retain_graph=True)
    (codebook_grad,) = torch.autograd.grad(out.codebook_loss, [weight], retain_graph=True)
    (commitment_grad,) = torch.autograd.grad(out.commitment_loss, [latents])
    assert codebook_grad.abs().sum() > 0 and commitment_grad.abs().sum() > 0
    torch.testing.assert_close(grad_codes, codebook_weight * codebook_grad)
    torch.testing.assert_close(grad_latents, commitment_weight * commitment_grad)


@pytest.mark.parametrize("l2_normalize", [False, True])
def test_each_loss_reaches_only_its_own_side(l2_normalize):
    quantizer = make_quantizer(l2_normalize=l2_normalize)
    latents = torch.randn(2, D, 3, 5, requires_grad=True)
    weight = quantizer.embedding.weight
    out = quantizer(latents)

    to_latents, to_codes = torch.autograd.grad(
        out.codebook_loss, [latents, weight], allow_unused=True, retain_graph=True
    )
    assert to_latents is None
    used = torch.bincount(out.indices.flatten(), minlength=K) > 0
    assert (to_codes[used].abs().sum(dim=1) > 0).all() and (to_codes[~used] == 0).all()

    to_latents, to_codes = torch.autograd.grad(
        out.commitment_loss, [latents, weight], allow_unused=True, retain_graph=True
    )
    assert to_codes is None and to_latents.abs().sum() > 0

    # The quantized output passes gradients to the encoder only (straight through), never to the codebook.
    (to_codes,) = torch.autograd.grad(out.quantized.sum(), [weight], allow_unused=True)
    assert to_codes is None


# -------------------------------------------------------------------------------------------------- EMA
def test_ema_moves_codes_toward_their_assigned_vectors():
    quantizer = make_quantizer(codebook_size=8, code_dim=4, use_ema=True, ema_decay=0.8).train()
    latents = torch.randn(4, 4, 4, 4) * 2 + 1

    def mean_distance() -> float:  # mean squared distance of each vector to its nearest code, without updating
        quantizer.eval()
        value = quantizer(latents).commitment_loss.item()
        quantizer.train()
        return value

    before = quantizer.embedding.weight.clone()
    start = mean_distance()
    indices = quantizer(latents).indices.flatten()
    after = quantizer.embedding.weight
    z = flat(latents)
    for k in indices.unique():
        target = z[indices == k].mean(dim=0)
        assert (after[k] - target).norm() < (before[k] - target).norm()

    for _ in range(30):
        quantizer(latents)
    assert mean_distance() < 0.5 * start


def test_ema_codebook_takes_no_gradient():
    quantizer = make_quantizer(use_ema=True).train()
    assert not quantizer.embedding.weight.requires_grad
    latents = torch.randn(2, D, 3, 5, requires_grad=True)
    out = quantizer(latents)
    assert out.codebook_loss.item() == 0.0
    out.loss.backward()
    assert quantizer.embedding.weight.grad is None
    assert latents.grad.abs().sum() > 0


def test_ema_leaves_unused_codes_in_place():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(64, 4, use_ema=True, ema_decay=0.9).train()  # the constructor's own EMA state
    codes = quantizer.embedding.weight.clone()
    used = torch.zeros(64, dtype=torch.bool)
    for _ in range(5):
        used |= torch.bincount(quantizer(torch.randn(2, 4, 2, 2)).indices.flatten(), minlength=64) > 0
    assert 0 < used.sum() < 64
    torch.testing.assert_close(quantizer.embedding.weight[~used], codes[~used], rtol=1e-3, atol=0)
    assert not torch.allclose(quantizer.embedding.weight[used], codes[used])


# ------------------------------------------------------------------------------------- dead-code restarts
@pytest.mark.parametrize("use_ema", [False, True])
@pytest.mark.parametrize("l2_normalize", [False, True])
def test_dead_codes_restart_from_batch_vectors(l2_normalize, use_ema):
    num_codes, dim, steps = 16, 4, 3
    quantizer = VectorQuantizer(num_codes, dim, l2_normalize=l2_normalize, use_ema=use_ema, dead_code_steps=steps)
    twin = VectorQuantizer(num_codes, dim, l2_normalize=l2_normalize, use_ema=use_ema, dead_code_steps=0)
    # Codes 0-3 are the axes; every input has positive coordinates, so they win over codes 4-15, which point the
    # other way (by Euclidean distance and by cosine alike) and are never used.
    codes = torch.cat([torch.eye(dim), -5.0 - torch.arange(12.0)[:, None] * torch.ones(1, dim)])
    set_codebook(quantizer, codes)
    set_codebook(twin, codes)
    torch.manual_seed(0)
    latents = torch.rand(2, dim, 3, 5) + 0.1
    latents[0, :, 0, :4] = 3 * torch.eye(dim)  # one vector per axis, so that codes 0-3 are all used

    for step in range(1, steps + 1):
        x = latents.clone().requires_grad_(True)
        out = quantizer.train()(x)
        twin.train()(latents)
        # The restart rewrites the codebook in place after the forward pass; backward must still work.
        out.loss.backward()
        assert torch.isfinite(x.grad).all()
        assert (out.indices.flatten().unique() == torch.arange(4)).all()
        weight = quantizer.embedding.weight.detach()
        if step < steps:  # not dead yet: untouched (up to the EMA's Laplace smoothing)
            torch.testing.assert_close(weight[4:], codes[4:], rtol=1e-4 if use_ema else 0, atol=0)

    z = flat(latents)
    if l2_normalize:
        z = F.normalize(z, dim=-1)
    equal_rows = (weight[4:, None, :] == z[None, :, :]).all(dim=-1)  # (12, N): restarted code i is input n
    assert equal_rows.any(dim=1).all()
    assert (quantizer.steps_since_used == 0).all()
    if use_ema:  # used codes follow the EMA exactly as without restarts
        torch.testing.assert_close(weight[:4], twin.embedding.weight[:4], rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(weight[:4], codes[:4])


def test_no_restarts_or_statistics_in_eval_mode():
    quantizer = make_quantizer(dead_code_steps=1, use_ema=True).eval()
    before = quantizer.embedding.weight.clone()
    for _ in range(3):
        quantizer(torch.randn(2, D, 3, 5))
    assert torch.equal(quantizer.embedding.weight, before)
    assert int(quantizer.usage_step) == 0 and quantizer.usage_statistics() == {"perplexity": 0.0, "usage": 0.0}


# ------------------------------------------------------------------------------------------- statistics
def test_usage_statistics_over_the_window():
    num_codes = 8
    quantizer = VectorQuantizer(num_codes, num_codes, usage_window=3).train()
    set_codebook(quantizer, torch.eye(num_codes))
    uniform = torch.eye(num_codes).reshape(1, 1, num_codes, num_codes).permute(0, 3, 1, 2)  # code j at position j
    single = torch.zeros(1, num_codes, 1, num_codes)
    single[:, 0] = 1.0  # code 0 everywhere

    out = quantizer(uniform)
    assert torch.equal(out.indices.flatten(), torch.arange(num_codes))
    assert out.perplexity.item() == pytest.approx(num_codes) and out.usage.item() == 1.0
    out = quantizer(single)
    assert out.perplexity.item() == pytest.approx(1.0) and out.usage.item() == 1 / num_codes

    # Window so far: one uniform batch and one single-code batch: code 0 seen K + 1 times, the others once.
    probs = [(num_codes + 1) / (2 * num_codes)] + [1 / (2 * num_codes)] * (num_codes - 1)
    expected = math.exp(-sum(p * math.log(p) for p in probs))
    assert quantizer.usage_statistics() == pytest.approx({"perplexity": expected, "usage": 1.0})

    for _ in range(2):  # the uniform batch falls out of the 3-step window
        quantizer(single)
    assert quantizer.usage_statistics() == pytest.approx({"perplexity": 1.0, "usage": 1 / num_codes})
    for _ in range(3):
        quantizer(uniform)
    assert quantizer.usage_statistics() == pytest.approx({"perplexity": num_codes, "usage": 1.0})


def test_statistics_state_dict_round_trip():
    quantizer = make_quantizer(usage_window=4).train()
    for _ in range(6):
        quantizer(torch.randn(2, D, 3, 5))
    state = quantizer.statistics_state_dict()
    assert not set(state) & set(quantizer.state_dict())  # kept out of the released weights

    restored = make_quantizer(usage_window=4)
    restored.load_statistics_state_dict(state)
    for name, value in state.items():
        assert torch.equal(getattr(restored, name), value)
    assert restored.usage_statistics() == quantizer.usage_statistics()
    quantizer(torch.randn(2, D, 3, 5))  # the saved state is a copy, not a view of the live buffers
    assert torch.equal(state["usage_step"], restored.usage_step)


# ----------------------------------------------------------------------------------------------- dtypes
def test_distances_stay_float32_under_bf16_autocast():
    # Two codes closer together than bf16 resolves near 1.0 (its spacing there is 2**-7 = 0.0078).
    codes = torch.zeros(2, 4)
    codes[0, 0], codes[1, 0] = 1.0, 1.003
    latents = torch.zeros(3, 4, 1, 1)
    latents[:, 0, 0, 0] = torch.tensor([1.0025, 1.0005, 1.0028])  # nearest codes in float32: 1, 0, 1
    z = flat(latents)

    def distances(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return z.pow(2).sum(1, keepdim=True) - 2 * z @ e.t() + e.pow(2).sum(1)[None, :]

    exact = distances(z, codes).argmin(dim=1)
    assert exact.tolist() == [1, 0, 1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        unguarded = distances(z, codes).argmin(dim=1)
    assert not torch.equal(unguarded, exact)  # the case does separate bf16 from float32

    quantizer = VectorQuantizer(2, 4)
    set_codebook(quantizer, codes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(latents)
    assert torch.equal(out.indices.flatten(), exact)
    assert out.quantized.dtype == torch.float32 and out.loss.dtype == torch.float32


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(codebook_size=1), r"`codebook_size` must be an int >= 2, got 1"),
        (dict(codebook_size=8.0), r"`codebook_size` must be an int >= 2, got 8\.0"),
        (dict(code_dim=0), r"`code_dim` must be a positive int, got 0"),
        (dict(beta=-0.5), r"`beta` must be >= 0, got -0\.5"),
        (dict(ema_decay=1.0), r"`ema_decay` must be in \(0, 1\), got 1\.0"),
        (dict(ema_decay=0.0), r"`ema_decay` must be in \(0, 1\), got 0\.0"),
        (dict(dead_code_steps=-1), r"`dead_code_steps` must be >= 0 .*got -1"),
        (dict(usage_window=0), r"`usage_window` must be >= 1, got 0"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VectorQuantizer(**{"codebook_size": K, "code_dim": D, **kwargs})


@pytest.mark.parametrize("shape", [(2, D, 3), (2, D + 1, 3, 5)])
def test_latents_of_the_wrong_shape_raise(shape):
    with pytest.raises(ValueError, match=rf"\(batch_size, {D}, h, w\), got {re_shape(shape)}"):
        make_quantizer()(torch.randn(shape))


def re_shape(shape: tuple[int, ...]) -> str:
    return "\\(" + ", ".join(str(s) for s in shape) + "\\)"


# ------------------------------------------------------------------------------------------------ bad inputs
# One row per bad input: (id, call, exception type, regex the message must match). Each regex names the bad value
# (or the option) and the expectation, so an error raised for another reason, or one that says less, fails.
# fmt: off
ERROR_CASES = [
    ("codebook_size=1", lambda quantizer: VectorQuantizer(1, 4), ValueError, r"`codebook_size` must be an int >= 2, got 1"),
    ("codebook_size float", lambda quantizer: VectorQuantizer(16.0, 4), ValueError, r"`codebook_size` must be an int >= 2, got 16\.0"),
    ("code_dim=0", lambda quantizer: VectorQuantizer(16, 0), ValueError, r"`code_dim` must be a positive int, got 0"),
    ("beta<0", lambda quantizer: VectorQuantizer(16, 4, beta=-0.5), ValueError, r"`beta` must be >= 0, got -0\.5"),
    ("ema_decay=0", lambda quantizer: VectorQuantizer(16, 4, ema_decay=0.0), ValueError, r"`ema_decay` must be in \(0, 1\), got 0\.0"),
    ("dead_code_steps<0", lambda quantizer: VectorQuantizer(16, 4, dead_code_steps=-2), ValueError, r"got -2"),
    ("usage_window=0", lambda quantizer: VectorQuantizer(16, 4, usage_window=0), ValueError, r"`usage_window` must be >= 1, got 0"),
    ("forward a list", lambda quantizer: quantizer([0.0]), TypeError, r"`latents` must be a torch\.Tensor, got list"),
    ("forward 3-D", lambda quantizer: quantizer(torch.zeros(4, 2, 2)), ValueError, r"Expected latents of shape \(batch_size, 4, h, w\), got \(4, 2, 2\)"),
    ("forward wrong code_dim", lambda quantizer: quantizer(torch.zeros(1, 3, 2, 2)), ValueError, r"got \(1, 3, 2, 2\)"),
    ("forward int64", lambda quantizer: quantizer(torch.zeros(1, 4, 2, 2, dtype=torch.int64)), TypeError, r"`latents` must be a floating-point tensor, got dtype torch\.int64"),
    ("forward empty batch", lambda quantizer: quantizer(torch.zeros(0, 4, 2, 2)), ValueError, r"`latents` is empty \(shape \(0, 4, 2, 2\)\)"),
    ("lookup float", lambda quantizer: quantizer.lookup(torch.zeros(1, 2, 2)), TypeError, r"`indices` must be an integer tensor, got dtype torch\.float32"),
    ("lookup 2-D", lambda quantizer: quantizer.lookup(torch.zeros(1, 4, dtype=torch.long)), ValueError, r"`indices` must have shape \(batch_size, h, w\), got \(1, 4\)"),
    ("lookup out of range", lambda quantizer: quantizer.lookup(torch.full((1, 2, 2), 16)), ValueError, r"`indices` must lie in \[0, 16\), got values in \[16, 16\]"),
    ("statistics missing key", lambda quantizer: quantizer.load_statistics_state_dict({"usage_step": torch.zeros((), dtype=torch.long)}), ValueError, r"missing \['steps_since_used', 'usage_history'\]"),
    ("statistics wrong shape", lambda quantizer: quantizer.load_statistics_state_dict({**quantizer.statistics_state_dict(), "usage_history": torch.zeros(3, 16)}), ValueError, r"`usage_history` has shape \(3, 16\), expected \(100, 16\)"),
]
# fmt: on


@pytest.mark.parametrize("call, error, message", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_bad_inputs_get_errors_that_name_them(call, error, message):
    with pytest.raises(error, match=message):
        call(VectorQuantizer(16, 4).train())


@pytest.mark.parametrize("use_ema", [False, True])
@pytest.mark.parametrize("dead_code_steps", [0, 1])
def test_a_forward_snapshot_puts_back_everything_a_training_forward_wrote(use_ema, dead_code_steps):
    """A step skipped after its forward (a non-finite loss or gradient with finite latents) must leave the codebook,
    its EMA statistics, the usage history and the dead-code counters as they were (`training.loop.ForwardSnapshot`)."""
    from hf_vqgan.training.loop import ForwardSnapshot

    torch.manual_seed(0)
    quantizer = VectorQuantizer(16, 4, use_ema=use_ema, dead_code_steps=dead_code_steps, usage_window=3).train()
    quantizer(torch.randn(2, 4, 3, 3))  # one step that went through: there are statistics to protect

    def held() -> dict[str, torch.Tensor]:
        tensors = dict(quantizer.named_parameters()) | dict(quantizer.named_buffers())
        return {name: tensor.detach().clone() for name, tensor in tensors.items()}

    before = held()
    snapshot = ForwardSnapshot(quantizer)
    quantizer(torch.randn(2, 4, 3, 3) * 3)  # finite latents: the forward writes its statistics
    moved = [name for name, tensor in held().items() if not torch.equal(tensor, before[name])]
    assert "usage_history" in moved and ("embedding.weight" in moved) == (use_ema or dead_code_steps > 0)
    snapshot.restore()
    assert all(torch.equal(tensor, before[name]) for name, tensor in held().items())


# ------------------------------------------------------------------------------------------------------ remap
USED = torch.tensor([1, 4, 5, 9, 20, 31])  # 6 of the 32 rows


def remapped(unknown_index) -> VectorQuantizer:
    remap = IndexRemap(K, len(USED), unknown_index)
    remap.used.copy_(USED)
    return make_quantizer(remap=remap).eval()


@pytest.mark.parametrize("unknown_index", ["random", "extra", 2])
def test_remap_emits_positions_of_used_rows_and_the_policy_for_others(unknown_index):
    quantizer = remapped(unknown_index)
    latents = torch.randn(4, D, 4, 4)
    rows = torch.cdist(flat(latents), quantizer.embedding.weight).argmin(1).reshape(4, 4, 4)  # (B, h, w) table rows
    known = torch.isin(rows, USED)
    assert 0 < int(known.sum()) < known.numel()
    out = quantizer(latents)
    assert torch.equal(USED[out.indices[known]], rows[known])  # a used row becomes its position in `used`
    unknown = out.indices[~known]
    if unknown_index == "random":
        assert int(unknown.min()) >= 0 and int(unknown.max()) < len(USED) and len(unknown.unique()) > 1
    else:
        assert torch.all(unknown == (len(USED) if unknown_index == "extra" else 2))
    assert quantizer.codebook_size == len(USED) + (unknown_index == "extra") and quantizer.table_size == K
    # The quantized latents are the nearest table rows, whatever token they get.
    torch.testing.assert_close(flat(out.quantized), quantizer.embedding.weight[rows.flatten()], rtol=0, atol=1e-5)


def test_remap_lookup_unmaps_tokens_and_the_extra_token_decodes_as_the_first_used_row():
    quantizer = remapped("extra")
    tokens = torch.tensor([[[0, 3], [5, 6]]])  # 6 is the extra token
    codes = quantizer.lookup(tokens)  # (1, D, 2, 2)
    expected = quantizer.embedding.weight[torch.tensor([[[1, 9], [31, 1]]])].permute(0, 3, 1, 2)
    assert torch.equal(codes, expected)
    with pytest.raises(ValueError, match=r"must lie in \[0, 7\), got values in \[0, 7\]"):
        quantizer.lookup(torch.tensor([[[0, 7]]]))


def test_remap_random_tokens_come_from_its_generator():
    quantizer = remapped("random")
    latents = torch.randn(4, D, 4, 4)
    draws = []
    for seed in (5, 5, 6):
        quantizer.remap.generator = torch.Generator().manual_seed(seed)
        draws.append(quantizer(latents).indices)
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_remap_usage_counts_tokens():
    quantizer = remapped("extra").train()
    quantizer(torch.randn(4, D, 4, 4))
    assert quantizer.usage_history.shape[1] == len(USED) + 1
    assert float(quantizer.usage_history[0].sum()) == 64


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: IndexRemap(K, 6, "sometimes"), r'`unknown_index` must be "random", "extra" or an int in \[0, 6\)'),
        (lambda: IndexRemap(K, 6, 6), r"got 6"),
        (lambda: IndexRemap(K, K + 1), r"used codes must be an int in \[1, 32\]"),
        (lambda: VectorQuantizer(K, D, remap=IndexRemap(16, 6)), "remap over a table of 16 rows"),
        (lambda: VectorQuantizer(K, D, dead_code_steps=3, remap=IndexRemap(K, 6)), "no dead-code restarts"),
    ],
)
def test_bad_remap_settings_are_named(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_remapped_vqgan_config_counts_tokens_and_saves_the_used_rows(tmp_path):
    from hf_vqgan.models.vqgan import VQGANModel
    from testing_utils import small_vqgan_config

    torch.manual_seed(0)
    model = VQGANModel(**small_vqgan_config(codebook_size=7, remap_table_size=16, remap_unknown_index="extra"))
    assert model.quantizer.codebook_size == 7 and model.quantizer.table_size == 16
    model.quantizer.remap.used.copy_(torch.tensor([0, 2, 3, 5, 8, 13]))
    model.save_pretrained(tmp_path)
    loaded = VQGANModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.quantizer.remap.used, model.quantizer.remap.used)
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.tokenize(images), model.tokenize(images))
