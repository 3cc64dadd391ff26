"""`hf_vqgan.training.presets`: the quantizer flags applied to a preset (issue 18)."""

from __future__ import annotations

import pytest

from hf_vqgan.training.presets import VQGAN_PRESETS, check_pretrained_quantizer, vqgan_preset, with_quantizer


@pytest.mark.parametrize(
    "flags, preset",
    [
        (dict(quantizer_type="fsq", fsq_levels=[8, 4, 4]), "digits-tiny-fsq"),
        (dict(quantizer_type="lfq"), "digits-tiny-lfq"),  # the VQ preset's 128 codes are 2^7: LFQ keeps them
    ],
)
def test_switching_the_digits_preset_gives_the_matching_preset(flags, preset):
    assert with_quantizer(vqgan_preset("digits-tiny"), **flags) == vqgan_preset(preset)


def test_no_flags_change_nothing_and_new_levels_replace_the_derived_shape():
    for name in VQGAN_PRESETS:
        assert with_quantizer(vqgan_preset(name)) == vqgan_preset(name)
    saved_fsq = {**vqgan_preset("digits-tiny-fsq"), "code_dim": 3, "codebook_size": 128}  # as config.json stores it
    config = with_quantizer(saved_fsq, fsq_levels=[5, 5])
    assert config["fsq_levels"] == [5, 5] and "code_dim" not in config and "codebook_size" not in config


def test_a_pretrained_tokenizer_only_takes_lfq_weights():
    lfq = dict(quantizer_type="lfq", fsq_levels=None, codebook_size=16)
    assert check_pretrained_quantizer(lfq, quantizer_type="lfq", codebook_size=16, lfq_entropy_weight=0.3) == {
        "lfq_entropy_weight": 0.3
    }
    fsq = dict(quantizer_type="fsq", fsq_levels=[4, 4], codebook_size=16)
    assert check_pretrained_quantizer(fsq, fsq_levels=(4, 4)) == {}
    with pytest.raises(ValueError, match=r"--fsq_levels \[5, 5\] disagrees with the pretrained tokenizer's "):
        check_pretrained_quantizer(fsq, fsq_levels=[5, 5])
    with pytest.raises(ValueError, match=r"--lfq_entropy_weight apply to LFQ tokenizers; the pretrained one uses "):
        check_pretrained_quantizer(fsq, lfq_entropy_weight=0.3)
