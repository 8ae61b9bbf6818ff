"""Checkers of exercise set 09_label_scoring: label scoring by log-likelihood.

Each checker calls the learner's function on known cases under a time limit and raises
``AssertionError`` with a message that names the mistake, or prints what passed.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import time_limit, _fail


def _tiny_causal_lm():
    """A randomly initialised 2-layer GPT-2 over 40 tokens (built locally, nothing downloaded), in eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=40, n_positions=32, n_embd=16, n_layer=2, n_head=2, bos_token_id=None,
                        eos_token_id=None, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).eval()


def check_label_log_likelihood(label_log_likelihood: Callable, seconds: float = 20) -> None:
    """Check ``label_log_likelihood(model, prompt_ids, label_ids, length_normalise) -> score`` of one
    prompt and one label: ``sum_t log p(c_t | prompt, c_<t)``, divided by the label's length if asked.

    Compared with the library's scoring (``course_lib.text.prompting``) on a tiny random GPT-2; the
    typical mistakes are recognised and named.
    """
    from ...text.prompting import label_log_likelihood as reference, pack_pairs
    name = "label_log_likelihood"
    model = _tiny_causal_lm()
    cases = [([5, 9, 2, 11, 3, 30], [7]), ([5, 9, 2, 11, 3, 30], [7, 8, 12]), ([21], [4, 33])]

    def variants(prompt, label):
        ids = torch.tensor([prompt + label])
        logits = model(input_ids=ids).logits[0].double()
        log_probs = logits.log_softmax(-1)
        start = len(prompt)
        targets = ids[0, start:]
        right = torch.arange(start - 1, start + len(label) - 1)
        return {
            "own position": log_probs[right + 1, targets].sum().item(),
            "prompt too": log_probs[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().item(),
            "no log_softmax": logits[right, targets].sum().item(),
            "softmax": logits.softmax(-1)[right, targets].sum().item(),
        }

    def call(prompt, label, normalise):
        with torch.no_grad():
            got = label_log_likelihood(model, list(prompt), list(label), normalise)
        if isinstance(got, torch.Tensor):
            if got.numel() != 1:
                _fail(name, f"should return one number (a 0-d tensor or a float), got a tensor of shape "
                            f"{tuple(got.shape)}: sum the label tokens' log-probabilities")
            got = got.item()
        if not isinstance(got, (float, int)):
            _fail(name, f"should return one number, got {type(got).__name__}")
        return float(got)

    with time_limit(seconds, name):
        for prompt, label in cases:
            with torch.no_grad():
                input_ids, attention_mask, label_mask = pack_pairs([(prompt, label)])
                summed, n_tokens = reference(model(input_ids=input_ids, attention_mask=attention_mask).logits,
                                             input_ids, label_mask)
            want_sum = summed.item()
            want_mean = want_sum / n_tokens.item()
            got_sum = call(prompt, label, False)
            described = f"prompt ids {prompt}, label ids {label}"
            if abs(got_sum - want_sum) > 1e-3:
                mistake = None
                for kind, value in variants(prompt, label).items():
                    if abs(got_sum - value) < 1e-3:
                        mistake = kind
                hints = {
                    "own position": "you read the logits at the label tokens' own positions; the logits at "
                                    "position i predict token i + 1, so label token t is scored by the logits one "
                                    "position earlier (the first label token by the prompt's last position)",
                    "prompt too": "you summed the log-probabilities of the prompt's tokens too; only the label's "
                                  "tokens count",
                    "no log_softmax": "you summed raw logits; take log_softmax over the vocabulary first, so that "
                                      "scores are log-probabilities",
                    "softmax": "you summed probabilities; sum log-probabilities (log_softmax), so that the score "
                               "is log p(label | prompt)",
                }
                hint = hints.get(mistake, "expected the sum over the label's tokens of log_softmax(logits) at the "
                                          "position before each token")
                _fail(name, f"with length_normalise=False, {described}: expected {want_sum:.4f}, got "
                            f"{got_sum:.4f}: {hint}")
            got_mean = call(prompt, label, True)
            if abs(got_mean - want_mean) > 1e-3:
                if abs(got_mean - want_sum) < 1e-3 and len(label) > 1:
                    hint = "length_normalise=True should divide the sum by the number of label tokens"
                else:
                    hint = "with length_normalise=True, divide the summed log-likelihood by the label's length"
                _fail(name, f"{described}: expected {want_mean:.4f}, got {got_mean:.4f}: {hint}")
        if call([5, 9, 2], [7, 8], False) > 0:
            _fail(name, "a log-likelihood cannot be positive")
    print(f"{name}: all checks passed")
