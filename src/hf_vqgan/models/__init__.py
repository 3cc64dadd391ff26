from .quantizer import QuantizerOutput, VectorQuantizer
from .vqgan import VQGANDecoderOutput, VQGANEncoderOutput, VQGANModel, VQGANModelOutput

__all__ = [
    "QuantizerOutput",
    "VQGANDecoderOutput",
    "VQGANEncoderOutput",
    "VQGANModel",
    "VQGANModelOutput",
    "VectorQuantizer",
]
