"""LoRA adapters on a sentence encoder, as the fast weights of MAML.

For 07_pretrained_encoders. LoRA (Hu et al. 2021, arXiv:2106.09685) freezes a pretrained weight
matrix ``W`` and learns a low-rank change, ``W' = W + (alpha / r) B A`` with ``A: [r, d_in]``
(random) and ``B: [d_out, r]`` (zeros, so ``W' = W`` at first). Adapting only ``A``, ``B`` and a
small head makes a per-task inner loop cheap: a few thousand numbers per layer instead of 22.7
million. :func:`with_lora` adds them through ``peft``; :class:`UtteranceClassifier` turns utterance
ids (the x of CLINC150 episodes) into logits, so ``course_lib.meta.maml.MAML`` adapts it unchanged::

    classifier = UtteranceClassifier(with_lora(encoder.model), encoder.tokenizer, train.texts, n_way=5)
    maml = MAML(classifier, inner_lr=..., first_order=True, adapted_if=is_fast_weight)

``MAML`` evaluates the classifier at adapted weights with ``torch.func.functional_call``; the
tokeniser runs inside ``forward``, on the utterances the ids point to.
"""
from __future__ import annotations

import warnings
from typing import Sequence

from peft import LoraConfig, get_peft_model
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from .encoder import mean_pool


def with_lora(model: nn.Module, rank: int = 8, alpha: float = 16, target_modules: Sequence[str] = ("query", "value"),
              ) -> nn.Module:
    """``model`` with LoRA adapters on the linear layers named ``target_modules``; its own weights frozen.

    The defaults adapt the attention's query and value projections (BERT-style names, as in
    all-MiniLM-L6-v2), as in the LoRA paper.
    """
    targets = [module for name, module in model.named_modules() if name.rsplit(".", 1)[-1] in target_modules]
    # GPT-2 stores its projections transposed (transformers' Conv1D): peft must be told so
    transposed = any(isinstance(module, Conv1D) for module in targets)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=0.0,
                        fan_in_fan_out=transposed)
    with warnings.catch_warnings():   # peft asks transformers 5 a question it has renamed; nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def is_fast_weight(name: str) -> bool:
    """The parameters a task adapts: the LoRA matrices and the classifier's head."""
    return "lora_" in name or name.startswith("head.")


class UtteranceClassifier(nn.Module):
    """Utterance ids ``[M]`` -> logits ``[M, n_way]``: tokenise, encode, mean-pool, a linear head.

    Args:
        encoder: a Hugging Face encoder (with or without LoRA) returning ``last_hidden_state``.
        tokenizer: its tokenizer.
        texts: the utterances the ids index (``IntentDataset.texts``).
        n_way: classes per task; the head ``[D -> n_way]`` starts at zero, so every task starts
            from uniform predictions and the inner loop learns it.
    """

    def __init__(self, encoder: nn.Module, tokenizer, texts: Sequence[str], n_way: int, max_length: int = 64):
        super().__init__()
        self.encoder, self.tokenizer, self.texts, self.max_length = encoder, tokenizer, list(texts), max_length
        self.head = nn.Linear(encoder.config.hidden_size, n_way)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def embed(self, ids: Tensor) -> Tensor:
        """``[M, D]`` mean-pooled embeddings of the utterances ``ids``."""
        batch = self.tokenizer([self.texts[i] for i in ids.tolist()], padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt").to(self.head.weight.device)
        return mean_pool(self.encoder(**batch).last_hidden_state, batch["attention_mask"])

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.embed(ids))
