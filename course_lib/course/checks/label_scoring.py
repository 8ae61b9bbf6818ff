"""Checkers of exercise set 09_label_scoring: label scoring by log-likelihood.

Each checker calls the learner's function on known cases under a time limit and raises
``AssertionError`` with a message that names the mistake, or prints what passed.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import time_limit, _fail, _fail_naming_the_mistake


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


def check_metaicl_loss(metaicl_loss: Callable, seconds: float = 10) -> None:
    """Check ``metaicl_loss(logits [B, T, V], input_ids [B, T], label_mask [B, T]) -> scalar``: MetaICL's training
    loss, minus the log-likelihood of the label tokens (``label_mask`` 1) averaged over all label tokens of the
    batch, each token scored by the logits one position before it (Min et al. 2022, MetaICL)."""
    name = "metaicl_loss"
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=generator, dtype=torch.float64)
    input_ids = torch.randint(0, 11, (3, 7), generator=generator)
    label_mask = torch.zeros(3, 7, dtype=torch.float64)
    label_mask[0, 4:6] = 1      # labels of different lengths and places, padding after them
    label_mask[1, 3:4] = 1
    label_mask[2, 2:7] = 1
    originals = logits.clone(), input_ids.clone(), label_mask.clone()
    log_probs = logits.log_softmax(-1)
    shifted = log_probs[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)            # token t from position t-1
    mask = label_mask[:, 1:]
    right = -(shifted * mask).sum() / mask.sum()
    own = log_probs.gather(-1, input_ids[..., None]).squeeze(-1)
    mistakes = [
        ((shifted * mask).sum() / mask.sum(), "the sign: the loss is MINUS the log-likelihood"),
        (-(own * label_mask).sum() / label_mask.sum(),
         "token t is predicted by the logits at position t - 1: shift by one (logits[:, :-1] against input_ids[:, 1:])"),
        (-shifted.mean(), "only the label tokens count (label_mask): the demonstrations and the query are context"),
        (-((shifted * mask).sum(1) / mask.sum(1)).mean(),
         "average over all label tokens of the batch, not per sequence first (labels differ in length)"),
        (-(shifted * mask).sum(), "divide by the number of label tokens"),
        (-(logits[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1) * mask).sum() / mask.sum(),
         "take log_softmax over the vocabulary first: raw logits are not log-probabilities"),
    ]
    with time_limit(seconds, name):
        got = metaicl_loss(logits, input_ids, label_mask)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            _fail(name, "should return one number as a tensor (a 0-d tensor, so that .backward() works)")
        if not all(torch.equal(a, b) for a, b in zip((logits, input_ids, label_mask), originals)):
            _fail(name, "the inputs were changed in place")
        if not torch.allclose(got.double(), right, atol=1e-8):
            _fail_naming_the_mistake(name, lambda wrong: torch.allclose(got.double(), wrong, atol=1e-8), mistakes,
                                     "expected -(sum of log p(label token | everything before it)) / (number of label tokens)")
        trainable = logits.clone().requires_grad_()
        metaicl_loss(trainable, input_ids, label_mask).backward()
        if trainable.grad is None or trainable.grad[1, 4:].abs().sum() != 0:
            _fail(name, "positions after the label (padding) must not get a gradient")
    print(f"{name}: all checks passed")


class CharacterTokenizer:
    """One token per character (``ord(c) % vocab``), so that tokenising a concatenation is concatenating the
    tokens: what the channel check needs from a tokenizer, without downloading one."""

    def __init__(self, vocab_size: int = 40) -> None:
        self.vocab_size = vocab_size

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [ord(c) % self.vocab_size for c in text]}


def check_channel_scores(channel_scores: Callable, label_log_likelihood: Callable, seconds: float = 30) -> None:
    """Check ``channel_scores(model, tokenizer, demonstrations, query, label_names) -> [N]`` of one query: for each
    label ``c``, the length-normalised log-likelihood of the query's text ``" " + query`` after the channel prompt
    ``prompting.build_channel_context(demonstrations, c)`` (Min et al. 2022a), scored with the learner's
    ``label_log_likelihood``; compared with the library's :func:`course_lib.text.prompting.channel_scores`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from ...text.prompting import build_channel_context, build_prompt
    from ...text.prompting import channel_scores as reference

    name = "channel_scores"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=256, n_embd=16, n_layer=2, n_head=2,
                                       bos_token_id=None, eos_token_id=None, resid_pdrop=0.0, embd_pdrop=0.0,
                                       attn_pdrop=0.0)).eval()
    tokenizer = CharacterTokenizer()
    demonstrations = [("how do i change my pin", "pin change"), ("what is my balance", "balance")]
    query, names = "change the pin", ["balance", "pin change", "card lost"]

    def ids(text):
        return tokenizer(text)["input_ids"]

    def direct(length_normalise=True):   # the label after the query: the direct score, not the channel one
        prompt = ids(build_prompt(demonstrations, query))
        return [float(label_log_likelihood(model, prompt, ids(" " + c), length_normalise)) for c in names]

    with time_limit(seconds, name), torch.no_grad():
        want = reference(model, tokenizer, demonstrations, [query], names)[0].double()
        got = channel_scores(model, tokenizer, demonstrations, query, names)
        got = torch.as_tensor([float(v) for v in got], dtype=torch.float64)
        if got.shape != (len(names),):
            _fail(name, f"should return one score per label name ({len(names)}), got {tuple(got.shape)}")
        if not torch.allclose(got, want, atol=1e-4):
            unnormalised = reference(model, tokenizer, demonstrations, [query], names, length_normalise=False)[0]
            if torch.allclose(got, torch.tensor(direct(), dtype=torch.float64), atol=1e-4):
                _fail(name, "that is the direct score log p(label | prompt, text): the channel score is "
                            "log p(text | demonstrations, label), the label first and the query's text scored")
            if torch.allclose(got, unnormalised.double(), atol=1e-4):
                _fail(name, "divide each score by the number of the text's tokens (length_normalise=True)")
            _fail(name, "expected, for each label c, label_log_likelihood(model, ids of "
                        "build_channel_context(demonstrations, c), ids of ' ' + query, True)")
    print(f"{name}: all checks passed")
