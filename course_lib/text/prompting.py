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
same whatever prompt precedes it. :func:`label_scores` runs each prompt through the model once and
scores all ``N`` labels against its key/value cache, computing the output layer only where a label
token is predicted: memory for ``N x C x V`` logits (``C`` the longest label's tokens, ``V`` the
vocabulary), whatever the number and the length of the prompts.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import DynamicCache

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


def cache_argument(model: nn.Module) -> str:
    """The name under which ``model``'s forward pass takes a key/value cache: ``"cache"`` in the
    ``transformers`` versions that renamed it, else ``"past_key_values"`` (a ``peft`` model passes it on)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def label_scores(model: nn.Module, tokenizer, prompts: Sequence[str], label_names: Sequence[str],
                 length_normalise: bool = True) -> Tensor:
    """``[len(prompts), len(label_names)]``: the log-likelihood of each label name after each prompt.

    ``model`` is a ``transformers`` causal LM (or a ``peft`` model around one): it is called with a
    key/value cache (:func:`cache_argument`), ``position_ids`` and ``logits_to_keep``. Each prompt is scored against all
    ``N`` labels by :func:`prompt_label_log_likelihoods`, one prompt at a time; the scores equal those
    of a full forward pass of each prompt-label pair (``tests/test_prompting.py`` checks it).
    """
    device = next(model.parameters()).device
    label_ids = [tokenizer(" " + name, add_special_tokens=False)["input_ids"] for name in label_names]
    labels, _, label_mask = pack_pairs([([], c) for c in label_ids], device)   # [N, C], right-padded
    scores = torch.stack([prompt_label_log_likelihoods(model, tokenizer(p, add_special_tokens=False)["input_ids"],
                                                       labels, label_mask) for p in prompts])   # [Q, N]
    return scores / label_mask.sum(-1) if length_normalise else scores


def prompt_label_log_likelihoods(model: nn.Module, prompt_ids: Sequence[int], labels: Tensor, label_mask: Tensor,
                                 ) -> Tensor:
    """``[N]``: ``sum_t log p(c_t | prompt, c_<t)`` for each of ``N`` labels after one prompt.

    Args:
        prompt_ids: the prompt's ``P`` token ids.
        labels: ``[N, C]`` the labels' token ids, right-padded; ``label_mask`` ``[N, C]`` 1 on their tokens.

    The prompt runs once (``[1, P]``), keeping its key/value cache and the logits of its last position
    only, which predict every label's first token. The cache is then repeated ``N`` times and the
    labels' tokens ``c_1 .. c_{C-1}`` run as one batch ``[N, C-1]`` at positions ``P .. P+C-2``,
    whose logits predict ``c_2 .. c_C``. Padding lies after each label's tokens, so causal attention
    keeps it from them. Logits held at once: ``[N, C-1, V]``.
    """
    if len(prompt_ids) == 0 or label_mask[:, 0].eq(0).any():
        raise ValueError("a prompt and every label name need at least one token to be scored")
    n_labels, length = labels.shape
    prompt = torch.tensor([list(prompt_ids)], device=labels.device)
    cache = DynamicCache()   # filled in place by each forward pass
    passing_cache = {cache_argument(model): cache}
    logits = model(input_ids=prompt, use_cache=True, logits_to_keep=1, **passing_cache).logits   # [1, 1, V]
    scores = F.log_softmax(logits[0, -1].float(), dim=-1)[labels[:, 0]]   # log p(c_1 | prompt): [N]
    if length == 1:
        return scores
    cache.batch_repeat_interleave(n_labels)
    positions = torch.arange(len(prompt_ids), len(prompt_ids) + length - 1, device=labels.device).expand(n_labels, -1)
    # an explicit mask (all ones: right padding is harmless): without one, some versions' attention would
    # align its causal mask to the cache's start instead of its end
    attention_mask = torch.ones(n_labels, len(prompt_ids) + length - 1, dtype=torch.long, device=labels.device)
    logits = model(input_ids=labels[:, :-1], position_ids=positions, attention_mask=attention_mask, use_cache=True,
                   **passing_cache).logits   # [N, C-1, V]
    later = F.log_softmax(logits.float(), dim=-1).gather(-1, labels[:, 1:, None]).squeeze(-1)   # [N, C-1]
    return scores + (later * label_mask[:, 1:]).sum(-1)
