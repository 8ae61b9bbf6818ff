"""Text for the language-model notebooks (07-09): a pretrained sentence encoder, its embedding cache, and
few-shot prompts for causal language models scored by label likelihood."""
from .embedding_cache import EmbeddingCache
from .encoder import ModelNotFoundError, SentenceEncoder, mean_pool
from .prompting import build_prompt, label_scores

__all__ = ["EmbeddingCache", "ModelNotFoundError", "SentenceEncoder", "build_prompt", "label_scores", "mean_pool"]
