"""Sentence embeddings kept on disk, so a notebook never encodes the same sentence twice.

Introduced in 07_pretrained_encoders. One file per encoder (model name, a digest of its weights, and
maximum length), under ``cache_dir()/embeddings/`` (``$COURSE_CACHE``, else ``~/.cache/course_lib``):
a fine-tuned or LoRA-adapted model has other weights, so it gets its own file and never reads or
overwrites the pretrained model's vectors. A file holds

    {"keys": [sha256(text) as hex, ...], "vectors": float32 [n, D]}

(row ``i`` of ``vectors`` is the embedding of the text with digest ``keys[i]``), written by
``torch.save`` to a temporary file that is then renamed into place, and read with
``weights_only=True``. A reader therefore sees a complete file or none; if two processes add to
the same file at once, the last writer's file wins and the other's new rows are encoded again later.
A file that cannot be read (truncated, corrupt) is only a cache: it is named in one printed sentence
and rebuilt.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from torch import nn

from ..data.sources import cache_dir, read_cache, save_atomically


def text_key(text: str) -> str:
    """The cache key of a text: the sha256 hex digest of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def weights_digest(model: nn.Module) -> str:
    """The sha256 hex digest of every parameter and buffer of ``model``: name, dtype, shape and bytes.

    Any change to what the model computes with (a training step, a LoRA adapter, a loaded state dict,
    a running statistic) changes it. It reads every byte: 0.1-0.2 s for the 22.7M float32 parameters
    of all-MiniLM-L6-v2 (91 MB) on one CPU core, plus the copy from a GPU.
    """
    digest = hashlib.sha256()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_file(model_key: str, weights: str, max_length: int) -> Path:
    """``cache_dir()/embeddings/<model_key, sanitised>-w<weights[:12]>-len<max_length>.pt``.

    ``weights`` is the model's ``weights_digest``. ``"sentence-transformers/all-MiniLM-L6-v2"`` becomes
    ``sentence-transformers--all-MiniLM-L6-v2``.
    """
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "--", model_key).strip("-.")
    return cache_dir() / "embeddings" / f"{safe_name}-w{weights[:12]}-len{max_length}.pt"


class EmbeddingCache:
    """A map ``text_key(text) -> vector [D]``, kept in memory and, given a ``path``, on disk.

    ``path=None`` keeps it in memory only (for this object's lifetime). A file that cannot be read
    starts an empty cache (said in one printed sentence), which the next ``add`` writes over it.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self._rows: dict[str, int] = {}
        self._vectors = torch.empty(0, 0)
        stored = read_cache(path, "embedding cache") if path is not None else None
        if stored is not None:
            self._rows = {key: row for row, key in enumerate(stored["keys"])}
            self._vectors = stored["vectors"]

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def get(self, keys: Sequence[str]) -> Tensor:
        """The vectors of ``keys`` (all present), ``[len(keys), D]`` float32."""
        return self._vectors[[self._rows[key] for key in keys]]

    def add(self, keys: Sequence[str], vectors: Tensor) -> None:
        """Store ``vectors [len(keys), D]`` under ``keys`` (new keys only), then rewrite the file."""
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if len(self._rows) and vectors.shape[1] != self._vectors.shape[1]:
            raise ValueError(f"vectors of size {vectors.shape[1]} for a cache of size {self._vectors.shape[1]}")
        new: dict[str, int] = {}  # key -> its row in ``vectors``, first occurrence of each unknown key
        for i, key in enumerate(keys):
            if key not in self._rows:
                new.setdefault(key, i)
        if not new:
            return
        first_row = len(self._rows)
        self._rows.update((key, first_row + j) for j, key in enumerate(new))
        added = vectors[list(new.values())].float().cpu()
        self._vectors = torch.cat([self._vectors.view(-1, vectors.shape[1]), added])
        if self.path is not None:
            save_atomically({"keys": list(self._rows), "vectors": self._vectors}, self.path)
