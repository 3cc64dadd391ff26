from .discriminator import PatchGANDiscriminator
from .prior import VQGANPriorConfig, VQGANPriorForCausalLM
from .quantizer import QuantizerOutput, VectorQuantizer
from .sampling import (
    DecodeStep,
    KVCacheDecodeStep,
    NoCacheDecodeStep,
    SlidingWindowDecodeStep,
    StaticCacheDecodeStep,
)
from .vqgan import VQGANDecoderOutput, VQGANEncoderOutput, VQGANModel, VQGANModelOutput

__all__ = [
    "DecodeStep",
    "KVCacheDecodeStep",
    "NoCacheDecodeStep",
    "PatchGANDiscriminator",
    "QuantizerOutput",
    "SlidingWindowDecodeStep",
    "StaticCacheDecodeStep",
    "VQGANDecoderOutput",
    "VQGANEncoderOutput",
    "VQGANModel",
    "VQGANModelOutput",
    "VQGANPriorConfig",
    "VQGANPriorForCausalLM",
    "VectorQuantizer",
]
