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
the ``[Q, N]`` "logits" that the course's evaluation protocol reads. :func:`channel_scores` scores the other
direction, the query's text after each label (``log p(x | c)``, Min et al. 2022a). MetaICL (Min et al. 2022,
arXiv:2110.15943) meta-trains the model on such prompts; this module only builds and scores them.

Prompt and label are tokenised separately and their ids concatenated, so a label's tokens are the
same whatever prompt precedes it. :func:`label_scores` scores all ``N`` labels of a prompt in one
forward pass (:func:`continuation_log_likelihoods`: the prompt once, the labels after it, each label
seeing the prompt and its own tokens only), computing the output layer only where a label token is
predicted: memory for ``1 + N x (C - 1)`` rows of ``V`` logits (``C`` the longest label's tokens, ``V``
the vocabulary), whatever the number and the length of the prompts.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..attention import shared_prefix_attention

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

    ``model`` is a ``transformers`` causal LM (or a ``peft`` model around one): it is called with a
    4D attention mask, ``position_ids`` and ``logits_to_keep``. Each prompt is scored against all ``N``
    labels by :func:`continuation_log_likelihoods`, one prompt (one forward pass) at a time; the scores
    equal those of a full forward pass of each prompt-label pair (``tests/test_prompting.py`` checks it).
    """
    device = next(model.parameters()).device
    label_ids = [tokenizer(" " + name, add_special_tokens=False)["input_ids"] for name in label_names]
    if not all(label_ids):
        raise ValueError("a prompt and every label name need at least one token to be scored")
    labels, _, label_mask = pack_pairs([([], c) for c in label_ids], device)   # [N, C], right-padded
    scores = torch.stack([continuation_log_likelihoods(model, tokenizer(p, add_special_tokens=False)["input_ids"],
                                                       labels, label_mask) for p in prompts])   # [Q, N]
    return scores / label_mask.sum(-1) if length_normalise else scores


CHANNEL_TEMPLATE = "intent: {label}\nutterance:"


def build_channel_context(demonstrations: Sequence[tuple[str, str]], label: str,
                          template: str = CHANNEL_TEMPLATE) -> str:
    """The channel prompt before the query's text: each demonstration label first, then its text; then ``label``.

    The demonstrations are ``template`` filled with their label name, a space and their text, separated by
    blank lines, as the direct prompt of :func:`build_prompt` with the two roles swapped (Min et al. 2022a)::

        intent: pin change
        utterance: how do i change my pin

        intent: balance
        utterance:

    after which the query's text follows (scored, not given).
    """
    return "\n\n".join([*(f"{template.format(label=name)} {text}" for text, name in demonstrations),
                         template.format(label=label)])


def channel_scores(model: nn.Module, tokenizer, demonstrations: Sequence[tuple[str, str]], queries: Sequence[str],
                   label_names: Sequence[str], length_normalise: bool = True) -> Tensor:
    """``[len(queries), len(label_names)]``: channel scores, the log-likelihood of each query's text given each label.

    The noisy-channel direction of Min, Lewis, Hajishirzi and Zettlemoyer (ACL 2022, arXiv:2108.04106), which
    MetaICL's "Channel" rows use: instead of ``log p(c | prompt, x)``, score

        s(c) = sum_t log p(x_t | demonstrations, c, x_1 .. x_{t-1})   (divided by x's token count if asked),

    every label explaining the same query ``x``, so a label cannot win by being likely on its own. The
    demonstrations (``(text, label name)`` pairs, shared by every query and label) and the ``N`` label-and-query
    continuations after them (:func:`build_channel_context`'s last block, then `` x``) run as one forward pass
    per query (:func:`continuation_log_likelihoods`). No demonstrations: the continuations alone. Equal to a full
    forward pass of each context-query pair (``tests/test_prompting.py``).
    """
    device = next(model.parameters()).device
    # the demonstrations alone (no candidate label yet): the channel context of the last one, with its text after it
    shown = f"{build_channel_context(demonstrations[:-1], demonstrations[-1][1])} {demonstrations[-1][0]}" \
        if demonstrations else ""
    prefix = tokenizer(shown, add_special_tokens=False)["input_ids"] if shown else []
    separator = "\n\n" if shown else ""
    rows = []
    for query in queries:
        text = tokenizer(" " + query, add_special_tokens=False)["input_ids"]
        contexts = [tokenizer(separator + build_channel_context([], name), add_special_tokens=False)["input_ids"]
                    for name in label_names]
        continuations, _, target_mask = pack_pairs([(context, text) for context in contexts], device)
        scores = continuation_log_likelihoods(model, prefix, continuations, target_mask)   # [N]
        rows.append(scores / len(text) if length_normalise else scores)
    return torch.stack(rows)


def continuation_log_likelihoods(model: nn.Module, prompt_ids: Sequence[int], continuations: Tensor,
                                 target_mask: Tensor) -> Tensor:
    """``[N]``: ``sum_t target_t log p(c_t | prompt, c_<t)`` for each of ``N`` continuations of one prompt.

    Args:
        prompt_ids: the prompt's ``P`` token ids (may be empty when no continuation's first token is a target).
        continuations: ``[N, C]`` token ids, right-padded; ``target_mask`` ``[N, C]`` 1 on the tokens scored (a
            label's tokens for :func:`label_scores`; the query's text after the label for :func:`channel_scores`).

    ONE forward pass of one sequence: the prompt, then each continuation's tokens ``c_1 .. c_{C-1}`` as a block
    of its own, ``P + N (C - 1)`` tokens. A 4D attention mask lets the prompt attend causally to itself and each
    block to the whole prompt and causally to its own tokens, never to another block; each block's position ids
    restart at ``P`` (:func:`course_lib.attention.shared_prefix_attention`). So every block computes exactly what it would right after the prompt alone, and the prompt
    is computed once for all ``N`` (a second pass, or a key/value cache repeated ``N`` times, would read every
    weight of the model again: on a CPU, the cost of a short forward pass). The output layer runs at the
    prompt's last position, which predicts every ``c_1``, and at the blocks' positions, which predict
    ``c_2 .. c_C``: ``1 + N (C - 1)`` rows of logits. Padding lies after each continuation's tokens, so the
    causal mask keeps it from them.
    """
    first_is_target = bool(target_mask[:, 0].any())
    if len(prompt_ids) == 0 and first_is_target:
        raise ValueError("a prompt and every label name need at least one token to be scored")
    n_rows, length = continuations.shape
    device, n_prompt = continuations.device, len(prompt_ids)
    input_ids = torch.cat([torch.tensor(list(prompt_ids), dtype=torch.long, device=device),
                           continuations[:, :-1].flatten()])[None]                     # [1, P + N(C-1)]
    mask, position = shared_prefix_attention(n_prompt, n_rows, length - 1, next(model.parameters()).dtype)
    kept = torch.arange(max(n_prompt - 1, 0), len(position))   # the prompt's last position, then every block's
    logits = model(input_ids=input_ids, attention_mask=mask[None, None].to(device),
                   position_ids=position[None].to(device), logits_to_keep=kept.to(device)).logits[0]   # [len(kept), V]
    log_probs = F.log_softmax(logits.float(), dim=-1)
    scores = torch.zeros(n_rows, device=device)
    if n_prompt:
        scores = log_probs[0, continuations[:, 0]] * target_mask[:, 0]                 # [N]
        log_probs = log_probs[1:]
    later = log_probs.unflatten(0, (n_rows, length - 1)).gather(-1, continuations[:, 1:, None]).squeeze(-1)
    return scores + (later * target_mask[:, 1:]).sum(-1)                              # [N]
