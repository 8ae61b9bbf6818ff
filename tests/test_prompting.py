from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from course_lib.text.encoder import default_model
from course_lib.text.prompting import build_prompt, label_scores


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model()[0])   # MiniLM's word pieces, offline


@pytest.fixture(scope="module")
def tiny_lm(tokenizer):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config).eval()


def test_prompt_shows_the_demonstrations_in_order_and_leaves_the_query_unlabelled():
    prompt = build_prompt([("freeze my card", "freeze account"), ("hi there", "greeting")], "what's my balance")
    assert prompt == ("utterance: freeze my card\nintent: freeze account\n\n"
                      "utterance: hi there\nintent: greeting\n\n"
                      "utterance: what's my balance\nintent:")


def reference_score(model, tokenizer, prompt, label):
    """log p(label | prompt), one pair at a time, no padding: sum over the label's tokens."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
    log_probs = F.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0], dim=-1)
    return sum(log_probs[len(p) + i - 1, token].item() for i, token in enumerate(c)), len(c)


def test_batched_padded_scores_equal_one_pair_at_a_time(tiny_lm, tokenizer):
    prompts = [build_prompt([("transfer money to mom", "transfer")], "what is my routing number"),
               "utterance: hello\nintent:"]          # different lengths: the shorter one is padded
    labels = ["routing", "pin change", "report lost card"]   # 1 to 3 tokens
    with torch.no_grad():
        summed = label_scores(tiny_lm, tokenizer, prompts, labels, length_normalise=False)
        normalised = label_scores(tiny_lm, tokenizer, prompts, labels)
    assert summed.shape == (2, 3)
    for i, prompt in enumerate(prompts):
        for j, label in enumerate(labels):
            score, n_tokens = reference_score(tiny_lm, tokenizer, prompt, label)
            assert summed[i, j].item() == pytest.approx(score, abs=1e-4)
            assert normalised[i, j].item() == pytest.approx(score / n_tokens, abs=1e-4)


class UnigramLM(torch.nn.Module):
    """A causal LM that ignores its context: the same next-token logits everywhere."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def test_the_label_the_model_prefers_wins_and_length_normalising_removes_the_length_penalty(tokenizer):
    logits = torch.zeros(tokenizer.vocab_size)
    favoured = tokenizer(" routing", add_special_tokens=False)["input_ids"]
    logits[favoured] = 3.0
    scores = label_scores(UnigramLM(logits), tokenizer, ["utterance: hi\nintent:"], ["greeting", "routing"])
    assert scores.argmax().item() == 1

    uniform = UnigramLM(torch.zeros(tokenizer.vocab_size))
    labels = ["transfer", "report lost card"]          # 1 token and 3 tokens, every token equally likely
    summed = label_scores(uniform, tokenizer, ["utterance: hi\nintent:"], labels, length_normalise=False)
    normalised = label_scores(uniform, tokenizer, ["utterance: hi\nintent:"], labels)
    assert summed[0, 0] > summed[0, 1] + 1, "summed log-probabilities punish the longer label"
    assert normalised[0, 0].item() == pytest.approx(normalised[0, 1].item())
