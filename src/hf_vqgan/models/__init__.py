from .discriminator import PatchGANDiscriminator
from .fsq import FiniteScalarQuantizer
from .lfq import LookupFreeQuantizer
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
    "FiniteScalarQuantizer",
    "KVCacheDecodeStep",
    "LookupFreeQuantizer",
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
