"""hf_vqgan: VQGAN tokenizers and their autoregressive priors for the Hugging Face ecosystem."""

__version__ = "0.1.0.dev0"

from .models import (
    QuantizerOutput,
    VectorQuantizer,
    VQGANDecoderOutput,
    VQGANEncoderOutput,
    VQGANModel,
    VQGANModelOutput,
)

__all__ = [
    "QuantizerOutput",
    "VQGANDecoderOutput",
    "VQGANEncoderOutput",
    "VQGANModel",
    "VQGANModelOutput",
    "VectorQuantizer",
]
