"""One causal forward pass for a shared prefix and many continuations: the attention mask and position ids.

Used by the in-context classifier (08: an episode's support set, then each query) and by prompt scoring (09: a
prompt, then each candidate label). Without it each continuation needs a sequence of its own that repeats the
prefix, ``n_blocks`` times the prefix's work.
"""
from __future__ import annotations

import torch
from torch import Tensor


def shared_prefix_attention(n_prefix: int, n_blocks: int, block_length: int,
                            dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """The additive attention mask ``[T, T]`` and the position ids ``[T]`` of ``prefix, block_1, ..., block_N``.

    ``T = n_prefix + n_blocks * block_length``. Token ``i`` may attend to token ``j`` (mask 0; else the dtype's
    most negative number) when ``j`` is in the prefix or in ``i``'s own block, and ``position_j <= position_i``.
    The prefix is causal in itself; every block sees the whole prefix and its own tokens causally, never another
    block; each block's positions restart at ``n_prefix``. So each block computes exactly what it would right after
    the prefix alone, ``prefix, block_b``, while the prefix is computed once for all. An additive mask is the form
    every attention implementation of ``transformers`` takes as given (eager adds it, SDPA passes it on); pass it
    as ``attention_mask=mask[None, None]`` and ``position_ids=positions[None]``.
    """
    block = torch.cat([torch.full((n_prefix,), -1), torch.arange(n_blocks).repeat_interleave(block_length)])
    positions = torch.cat([torch.arange(n_prefix), n_prefix + torch.arange(block_length).repeat(n_blocks)])
    visible = (((block[None] == -1) | (block[:, None] == block[None]))
               & (positions[None] <= positions[:, None]))
    mask = torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)
    return mask, positions
