"""Text for the language-model notebooks (07-09): a pretrained sentence encoder and its embedding cache."""
from .embedding_cache import EmbeddingCache
from .encoder import ModelNotFoundError, SentenceEncoder, mean_pool

__all__ = ["EmbeddingCache", "ModelNotFoundError", "SentenceEncoder", "mean_pool"]
