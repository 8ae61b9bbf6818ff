"""Few-shot classification with a causal language model: prompts with demonstrations, labels by likelihood.

For 09_metaicl. A prompt shows ``k`` labelled demonstrations, then the query without its label::

    utterance: how do i change my pin
    intent: pin change

    utterance: what is my balance
    intent:

Each candidate label name ``c`` (verbalised: ``"pin change"``) is scored by the log-likelihood the
model gives its tokens after the prompt,

    score(c) = sum_t log p(c_t | prompt, c_1 .. c_{t-1}),

optionally divided by the number of tokens of ``c`` (``length_normalise``: otherwise longer label
names lose for being long). The predicted label is the argmax; the scores of all ``N`` labels form
the ``[Q, N]`` "logits" that the course's evaluation protocol reads. MetaICL (Min et al. 2022,
arXiv:2110.15943) meta-trains the model on such prompts; this module only builds and scores them.

Prompt and label are tokenised separately and their ids concatenated, so a label's tokens are the
same whatever prompt precedes it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

TEMPLATE = "utterance: {text}\nintent:"


def build_prompt(demonstrations: Sequence[tuple[str, str]], query: str, template: str = TEMPLATE) -> str:
    """The prompt for ``query`` after ``demonstrations`` (``(text, label name)`` pairs, in order).

    Each demonstration is ``template`` filled with its text, a space and its label name; they are
    separated by blank lines; the query ends the prompt, its label left for the model.
    """
    shown = [f"{template.format(text=text)} {label}" for text, label in demonstrations]
    return "\n\n".join(shown + [template.format(text=query)])


def pack_pairs(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], device: torch.device | str | None = None,
               ) -> tuple[Tensor, Tensor, Tensor]:
    """One right-padded batch of ``(prompt ids, label ids)`` pairs, each row the prompt then its label.

    Returns ``input_ids`` ``[B, T]`` (0 after the end), ``attention_mask`` ``[B, T]`` (1 on the pair's
    tokens) and ``label_mask`` ``[B, T]`` (1 on the label's tokens only), ``T`` the longest pair.
    """
    length = max(len(p) + len(c) for p, c in pairs)
    input_ids = torch.zeros(len(pairs), length, dtype=torch.long, device=device)
    attention_mask = torch.zeros_like(input_ids)
    label_mask = torch.zeros(len(pairs), length, device=device)
    for row, (p, c) in enumerate(pairs):
        input_ids[row, :len(p) + len(c)] = torch.tensor(list(p) + list(c))
        attention_mask[row, :len(p) + len(c)] = 1
        label_mask[row, len(p):len(p) + len(c)] = 1
    return input_ids, attention_mask, label_mask


def label_log_likelihood(logits: Tensor, input_ids: Tensor, label_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``sum_t log p(c_t | prompt, c_<t)`` over each row's label tokens, and their number: ``[B]``, ``[B]``.

    ``logits`` ``[B, T, V]`` of a causal LM on ``input_ids`` ``[B, T]``; the logits at position
    ``t - 1`` predict token ``t``, so the label's first token is read one position before it starts.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    token_log_probs = log_probs[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # [B, T-1]
    label_positions = label_mask[:, 1:]
    return (token_log_probs * label_positions).sum(-1), label_positions.sum(-1)


def label_scores(model: nn.Module, tokenizer, prompts: Sequence[str], label_names: Sequence[str],
                 length_normalise: bool = True) -> Tensor:
    """``[len(prompts), len(label_names)]``: the log-likelihood of each label name after each prompt.

    ``model`` is a causal LM (``model(input_ids, attention_mask).logits``: ``[B, T, V]``). All
    prompt-label pairs go through the model in one right-padded batch (:func:`pack_pairs`); the score
    of a pair sums ``log softmax(logits)`` at the label's positions (:func:`label_log_likelihood`).
    """
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    label_ids = [tokenizer(" " + name, add_special_tokens=False)["input_ids"] for name in label_names]
    input_ids, attention_mask, label_mask = pack_pairs([(p, c) for p in prompt_ids for c in label_ids],
                                                       next(model.parameters()).device)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    scores, n_tokens = label_log_likelihood(logits, input_ids, label_mask)
    if length_normalise:
        scores = scores / n_tokens
    return scores.view(len(prompts), len(label_names))
