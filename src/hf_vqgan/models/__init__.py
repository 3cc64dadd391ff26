from .discriminator import PatchGANDiscriminator
from .prior import VQGANPriorConfig, VQGANPriorForCausalLM
from .quantizer import QuantizerOutput, VectorQuantizer
from .vqgan import VQGANDecoderOutput, VQGANEncoderOutput, VQGANModel, VQGANModelOutput

__all__ = [
    "PatchGANDiscriminator",
    "QuantizerOutput",
    "VQGANDecoderOutput",
    "VQGANEncoderOutput",
    "VQGANModel",
    "VQGANModelOutput",
    "VQGANPriorConfig",
    "VQGANPriorForCausalLM",
    "VectorQuantizer",
]
