from .pipeline_vqgan_transformer import VQGANTransformerPipeline

__all__ = ["VQGANTransformerPipeline"]
