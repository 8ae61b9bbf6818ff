import pytest
import torch
from torch.nn import functional as F
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from course_lib.text.encoder import default_model
from course_lib.text.prompting import build_prompt, label_scores


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model()[0])   # MiniLM's word pieces, offline


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny_lm(request, tokenizer):
    """A random 2-layer GPT-2, or a random 2-layer Llama (SmolLM2's architecture: rotary positions, grouped
    key/value heads), over MiniLM's 30,522 word pieces."""
    torch.manual_seed(0)
    if request.param == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=128, n_embd=32, n_layer=2,
                                          n_head=2)).eval()
    return LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=128, tie_word_embeddings=True)).eval()


def test_prompt_shows_the_demonstrations_in_order_and_leaves_the_query_unlabelled():
    prompt = build_prompt([("freeze my card", "freeze account"), ("hi there", "greeting")], "what's my balance")
    assert prompt == ("utterance: freeze my card\nintent: freeze account\n\n"
                      "utterance: hi there\nintent: greeting\n\n"
                      "utterance: what's my balance\nintent:")


def reference_score(model, tokenizer, prompt, label):
    """log p(label | prompt), one pair at a time, no padding: sum over the label's tokens."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
    log_probs = F.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].double(), dim=-1)
    return sum(log_probs[len(p) + i - 1, token].item() for i, token in enumerate(c)), len(c)


def test_scores_from_one_pass_of_the_prompt_and_its_labels_equal_one_pair_at_a_time(tiny_lm, tokenizer):
    prompts = [build_prompt([("transfer money to mom", "transfer")], "what is my routing number"),
               "utterance: hello\nintent:"]          # different lengths
    labels = ["routing", "pin change", "report lost card"]   # 1 to 3 tokens: the shorter ones are padded
    with torch.no_grad():
        summed = label_scores(tiny_lm, tokenizer, prompts, labels, length_normalise=False)
        normalised = label_scores(tiny_lm, tokenizer, prompts, labels)
        one_token = label_scores(tiny_lm, tokenizer, prompts[:1], ["routing", "transfer"], length_normalise=False)
    assert summed.shape == (2, 3)
    for i, prompt in enumerate(prompts):
        for j, label in enumerate(labels):
            score, n_tokens = reference_score(tiny_lm, tokenizer, prompt, label)
            assert summed[i, j].item() == pytest.approx(score, abs=1e-5)
            assert normalised[i, j].item() == pytest.approx(score / n_tokens, abs=1e-5)
    assert one_token[0, 1].item() == pytest.approx(reference_score(tiny_lm, tokenizer, prompts[0], "transfer")[0],
                                                   abs=1e-5)


def test_the_output_layer_runs_only_where_a_label_token_is_predicted(tiny_lm, tokenizer):
    rows = []
    hook = tiny_lm.get_output_embeddings().register_forward_hook(lambda module, args, out: rows.append(out.shape))
    long_prompt = build_prompt([("transfer money to my mother please", "transfer")] * 8, "what is my routing number")
    labels = ["routing", "pin change", "report lost card"]
    try:
        with torch.no_grad():
            label_scores(tiny_lm, tokenizer, [long_prompt, "utterance: hi\nintent:"], labels)
    finally:
        hook.remove()
    longest = max(len(tokenizer(" " + name, add_special_tokens=False)["input_ids"]) for name in labels)
    assert len(tokenizer(long_prompt, add_special_tokens=False)["input_ids"]) > 100
    # one forward pass per prompt; its output layer at the prompt's last position, then at the 3 labels' first
    # C-1 tokens: never a position inside the prompt
    assert [tuple(shape[:2]) for shape in rows] == [(1, 1 + 3 * (longest - 1))] * 2


def constant_lm(logits: torch.Tensor) -> GPT2LMHeadModel:
    """A GPT-2 that ignores its context: its final layer norm outputs the same vector at every position
    (weight 0, bias e_0) and its output layer maps that vector to ``logits`` ``[V]``."""
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(logits), n_positions=64, n_embd=8, n_layer=1, n_head=1,
                                       tie_word_embeddings=False)).eval()
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(torch.eye(8)[0])
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = logits
    return model


def test_the_label_the_model_prefers_wins_and_length_normalising_removes_the_length_penalty(tokenizer):
    logits = torch.zeros(tokenizer.vocab_size)
    favoured = tokenizer(" routing", add_special_tokens=False)["input_ids"]
    logits[favoured] = 3.0
    scores = label_scores(constant_lm(logits), tokenizer, ["utterance: hi\nintent:"], ["greeting", "routing"])
    assert scores.argmax().item() == 1

    uniform = constant_lm(torch.zeros(tokenizer.vocab_size))
    labels = ["transfer", "report lost card"]          # 1 token and 3 tokens, every token equally likely
    summed = label_scores(uniform, tokenizer, ["utterance: hi\nintent:"], labels, length_normalise=False)
    normalised = label_scores(uniform, tokenizer, ["utterance: hi\nintent:"], labels)
    assert summed[0, 0] > summed[0, 1] + 1, "summed log-probabilities punish the longer label"
    assert normalised[0, 0].item() == pytest.approx(normalised[0, 1].item())


def test_an_empty_prompt_or_label_name_is_refused(tiny_lm, tokenizer):
    with pytest.raises(ValueError, match="at least one token"):
        label_scores(tiny_lm, tokenizer, [""], ["routing"])
    with pytest.raises(ValueError, match="at least one token"):
        label_scores(tiny_lm, tokenizer, ["utterance: hi\nintent:"], ["routing", ""])


def test_channel_scores_equal_a_full_forward_pass_of_each_label_and_query(tiny_lm, tokenizer):
    from course_lib.text.prompting import channel_scores
    demonstrations = [("transfer money to mom", "transfer"), ("what is my routing number", "routing")]
    queries = ["send cash to my brother", "hello"]
    labels = ["transfer", "routing", "report lost card"]
    for shown, prefix in ((demonstrations, "intent: transfer\nutterance: transfer money to mom\n\n"
                                           "intent: routing\nutterance: what is my routing number"), ([], None)):
        with torch.no_grad():
            summed = channel_scores(tiny_lm, tokenizer, shown, queries, labels, length_normalise=False)
            normalised = channel_scores(tiny_lm, tokenizer, shown, queries, labels)
        assert summed.shape == (2, 3)
        for i, query in enumerate(queries):
            target = tokenizer(" " + query, add_special_tokens=False)["input_ids"]
            for j, label in enumerate(labels):
                context = (tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []) + \
                    tokenizer(("\n\n" if prefix else "") + f"intent: {label}\nutterance:",
                              add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    log_probs = F.log_softmax(tiny_lm(input_ids=torch.tensor([context + target])).logits[0].double(), -1)
                reference = sum(log_probs[len(context) + t - 1, token].item() for t, token in enumerate(target))
                assert summed[i, j].item() == pytest.approx(reference, abs=1e-5)
                assert normalised[i, j].item() == pytest.approx(reference / len(target), abs=1e-5)
