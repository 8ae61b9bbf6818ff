"""MetaICL: prompts from episodes, a loss on the label tokens only, training through the loop, LoRA."""
import warnings
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from course_lib.data.batches import PromptBatch
from course_lib.data.clinc import load_clinc
from course_lib.data.episodes import EpisodeSampler, fixed_episodes
from course_lib.evaluate import evaluate_episodes
from course_lib.meta import metaicl
from course_lib.text.causal_lm import CompactTokenizer
from course_lib.text.encoder import default_model
from course_lib.text.lora import with_lora
from course_lib.text.prompting import label_log_likelihood
from course_lib.train import TrainConfig, train


@pytest.fixture(scope="module")
def standin():
    return load_clinc("train", source="standin")


@pytest.fixture(scope="module")
def tokenizer(standin):
    from transformers import AutoTokenizer
    return CompactTokenizer(AutoTokenizer.from_pretrained(default_model()[0]),
                            list(standin.texts) + standin.label_names + ["utterance: intent:"])


def tiny_lm(tokenizer, seed=0, architecture="gpt2"):
    torch.manual_seed(seed)
    if architecture == "llama":   # SmolLM2's architecture
        return LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=128))
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


class ContextFreeLM(torch.nn.Module):
    """The same next-token logits at every position, whatever came before."""

    def __init__(self, vocab_size):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.randn(vocab_size, generator=torch.Generator().manual_seed(0)))

    def forward(self, input_ids, attention_mask, logits_to_keep=0):
        length = len(logits_to_keep) if isinstance(logits_to_keep, torch.Tensor) else input_ids.shape[1]
        return SimpleNamespace(logits=self.logits.expand(input_ids.shape[0], length, -1))


def test_episode_prompts_show_the_support_with_its_intent_names_and_end_with_each_query(standin):
    episode = EpisodeSampler(standin, n_way=3, k_shot=1, n_query=2).sample(torch.Generator().manual_seed(0))
    prompts, names = metaicl.episode_prompts(standin, episode)
    assert names == [standin.label_names[c] for c in episode.task.tolist()]
    assert len(prompts) == 6
    for prompt, query in zip(prompts, standin.texts_of(episode.query_x)):
        assert prompt.endswith(f"utterance: {query}\nintent:")
        for text, name in zip(standin.texts_of(episode.support_x), names):
            assert f"utterance: {text}\nintent: {name}" in prompt


def test_the_loss_counts_the_label_tokens_only(standin, tokenizer):
    sampler = metaicl.PromptBatchSampler(standin, tokenizer, n_way=3, k_shot=1)
    batch = sampler.sample_batch(4, torch.Generator().manual_seed(0))
    model = ContextFreeLM(tokenizer.vocab_size)
    loss, _ = metaicl.loss(model, batch)
    log_probs = model.logits.log_softmax(-1)
    labels = batch.input_ids[batch.label_mask.bool()]
    assert loss.item() == pytest.approx(-log_probs[labels].mean().item(), abs=1e-5)
    # other prompt tokens: a loss that counted them would change; other label tokens: it must change
    changed_prompt = PromptBatch(torch.where(batch.label_mask.bool(), batch.input_ids,
                                                     (batch.input_ids + 7) % tokenizer.vocab_size),
                                         batch.attention_mask, batch.label_mask)
    assert metaicl.loss(model, changed_prompt)[0].item() == pytest.approx(loss.item(), abs=1e-6)
    changed_label = PromptBatch(torch.where(batch.label_mask.bool(), (batch.input_ids + 7) % tokenizer.vocab_size,
                                                    batch.input_ids), batch.attention_mask, batch.label_mask)
    assert metaicl.loss(model, changed_label)[0].item() != pytest.approx(loss.item(), abs=1e-3)


def test_the_loss_equals_the_label_log_likelihood_of_the_whole_sequence_on_a_real_lm(standin, tokenizer):
    batch = metaicl.PromptBatchSampler(standin, tokenizer, 3, 1).sample_batch(4, torch.Generator().manual_seed(1))
    model = tiny_lm(tokenizer).eval()
    with torch.no_grad():
        loss, _ = metaicl.loss(model, batch)
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        log_likelihood, n_tokens = label_log_likelihood(full, batch.input_ids, batch.label_mask)
    assert loss.item() == pytest.approx((-log_likelihood.sum() / n_tokens.sum()).item(), abs=1e-5)


def test_a_few_steps_lower_the_loss_and_predict_follows_the_evaluation_protocol(standin, tokenizer):
    model = tiny_lm(tokenizer)
    sampler = metaicl.PromptBatchSampler(standin, tokenizer, n_way=3, k_shot=1)
    batch = sampler.sample_batch(4, torch.Generator().manual_seed(0))
    history = train(model, metaicl.loss, lambda generator: batch,
                    TrainConfig(steps=12, lr=1e-2, log_every=4, progress=False))
    _, losses = history.series("loss")
    assert losses[-1] < 0.5 * losses[0]
    episodes = fixed_episodes(EpisodeSampler(standin, 3, 1, 2), 3, seed=0)
    assert metaicl.predict(model, tokenizer, standin, episodes[0]).shape == (6, 3)
    assert model.training, "predict puts the model back in training mode"
    result = evaluate_episodes(partial(metaicl.predict, model, tokenizer, standin), episodes)
    assert 0.0 <= result.mean <= 1.0


@pytest.mark.parametrize("architecture, attention", [("gpt2", metaicl.GPT2_ATTENTION), ("llama", metaicl.LLAMA_ATTENTION)])
def test_lora_on_the_attention_trains_the_adapters_and_leaves_the_base_weights_untouched(standin, tokenizer,
                                                                                         architecture, attention):
    episode = fixed_episodes(EpisodeSampler(standin, 3, 1, 2), 1, seed=0)[0]
    plain = metaicl.predict(tiny_lm(tokenizer, architecture=architecture).eval(), tokenizer, standin, episode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # GPT-2's transposed Conv1D weights are declared, not warned about
        model = with_lora(tiny_lm(tokenizer, architecture=architecture), rank=4, target_modules=attention)
    # B = 0 at first: the peft model scores like its base model (the key/value cache passes through peft)
    assert torch.allclose(metaicl.predict(model, tokenizer, standin, episode), plain, atol=1e-5)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(not p.requires_grad for n, p in model.named_parameters() if n in base)
    sampler = metaicl.PromptBatchSampler(standin, tokenizer, n_way=3, k_shot=1)
    train(model, metaicl.loss, partial(sampler.sample_batch, 4), TrainConfig(steps=3, lr=1e-2, progress=False))
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert any(not torch.equal(p, lora[n]) for n, p in model.named_parameters() if n in lora)
