"""hf_vqgan: VQGAN tokenizers and their autoregressive priors for the Hugging Face ecosystem.

    from hf_vqgan import VQGANModel, VQGANPriorForCausalLM, VQGANTransformerPipeline

Importing the package registers `VQGANPriorConfig` / `VQGANPriorForCausalLM` with transformers' Auto classes.
"""

__version__ = "0.1.0.dev0"

# diffusers' pipeline loader finds how to load a third-party component by looking its base classes up by name on
# the component's library module (`getattr(hf_vqgan, "ModelMixin")`), so every base must be reachable here:
# ModelMixin for the VQGANs, SchedulerMixin for the image processors (a config-only loadable base), PreTrainedModel
# for the prior.
from diffusers import ModelMixin, SchedulerMixin  # noqa: E402, F401, I001
from transformers import PreTrainedModel  # noqa: E402, F401

from .losses import (
    LPIPSLoss,
    LPIPSWeightsUnavailableError,
    VQGANDiscriminatorLossOutput,
    VQGANGeneratorLossOutput,
    VQGANLoss,
)
from .models import (
    FiniteScalarQuantizer,
    LookupFreeQuantizer,
    PatchGANDiscriminator,
    QuantizerOutput,
    VectorQuantizer,
    VQGANDecoderOutput,
    VQGANEncoderOutput,
    VQGANModel,
    VQGANModelOutput,
    VQGANPriorConfig,
    VQGANPriorForCausalLM,
)
from .image_processor import VQGANImageProcessor
from .pipelines import VQGANTransformerPipeline

__all__ = [
    "FiniteScalarQuantizer",
    "LPIPSLoss",
    "LPIPSWeightsUnavailableError",
    "LookupFreeQuantizer",
    "PatchGANDiscriminator",
    "QuantizerOutput",
    "VQGANDecoderOutput",
    "VQGANDiscriminatorLossOutput",
    "VQGANEncoderOutput",
    "VQGANGeneratorLossOutput",
    "VQGANImageProcessor",
    "VQGANLoss",
    "VQGANModel",
    "VQGANModelOutput",
    "VQGANPriorConfig",
    "VQGANPriorForCausalLM",
    "VQGANTransformerPipeline",
    "VectorQuantizer",
]
