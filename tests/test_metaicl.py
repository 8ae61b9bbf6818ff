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
    # B = 0 at first: the peft model scores like its base model (the 4D attention mask and the position ids pass through peft)
    assert torch.allclose(metaicl.predict(model, tokenizer, standin, episode), plain, atol=1e-5)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(not p.requires_grad for n, p in model.named_parameters() if n in base)
    sampler = metaicl.PromptBatchSampler(standin, tokenizer, n_way=3, k_shot=1)
    train(model, metaicl.loss, partial(sampler.sample_batch, 4), TrainConfig(steps=3, lr=1e-2, progress=False))
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert any(not torch.equal(p, lora[n]) for n, p in model.named_parameters() if n in lora)


def test_symbol_names_say_nothing_of_the_class_and_the_sampler_uses_them(standin, tokenizer):
    assert metaicl.symbol_names(3) == ["A", "B", "C"]
    with pytest.raises(ValueError, match="1 to 10 ways"):
        metaicl.symbol_names(11)
    sampler = metaicl.PromptBatchSampler(standin, tokenizer, n_way=3, k_shot=1, symbols=True)
    symbol_ids = {tokenizer(" " + s)["input_ids"][0] for s in "abc"}   # MiniLM's word pieces are lowercase
    for seed in range(5):
        batch = sampler.sample(torch.Generator().manual_seed(seed))
        labels = batch.input_ids[batch.label_mask.bool()].tolist()
        assert len(labels) == 1 and labels[0] in symbol_ids
    with pytest.raises(ValueError, match="not both"):
        metaicl.PromptBatchSampler(standin, tokenizer, 3, 1, shuffle_names=True, symbols=True)


def test_multi_task_zero_shot_prompts_hold_the_query_alone(standin, tokenizer):
    prompts = {}
    for demonstrations in (True, False):
        sampler = metaicl.PromptBatchSampler(standin, tokenizer, 3, 1, demonstrations=demonstrations)
        batch = sampler.sample_batch(1, torch.Generator().manual_seed(0))
        prompts[demonstrations] = tokenizer.decode(batch.input_ids[0, ~batch.label_mask[0].bool()].tolist())
    assert prompts[True].count("utterance") == 4 and prompts[False].count("utterance") == 1
    assert prompts[True].endswith(prompts[False]), "the same query, the demonstrations left out"


def test_episode_transforms_keep_nested_shots_one_random_query_and_random_demonstration_labels(standin):
    episodes = fixed_episodes(EpisodeSampler(standin, 3, 4, 2), 30, seed=0)
    two = metaicl.fewer_shots(episodes[0], 2)
    assert two.support_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert two.support_x.tolist() == episodes[0].support_x.view(3, 4)[:, :2].flatten().tolist()
    assert len(metaicl.fewer_shots(episodes[0], 0).support_y) == 0
    with pytest.raises(ValueError, match="cannot keep 5"):
        metaicl.fewer_shots(episodes[0], 5)
    single = metaicl.one_query(episodes, seed=0)
    assert all(len(e.query_y) == 1 for e in single)
    assert {int(e.query_y) for e in single} == {0, 1, 2}, "the query is drawn at random, not always label 0"
    for e, s in zip(episodes, single):
        assert int(s.query_x) in e.query_x.tolist() and int(s.query_y) == int(e.query_y[e.query_x == s.query_x][0])
    shuffled = metaicl.random_demonstration_labels(episodes, seed=0)
    agree = torch.cat([(s.support_y == e.support_y).float() for s, e in zip(shuffled, episodes)]).mean().item()
    assert 0.2 < agree < 0.5, "uniform random labels agree with the true ones about 1/3 of the time"
    assert all(torch.equal(s.query_y, e.query_y) and torch.equal(s.support_x, e.support_x)
               for s, e in zip(shuffled, episodes))


def test_channel_predict_scores_the_query_text_after_each_label(standin, tokenizer):
    episode = metaicl.one_query(fixed_episodes(EpisodeSampler(standin, 3, 1, 1), 1, seed=0))[0]
    model = tiny_lm(tokenizer).eval()
    scores = metaicl.predict(model, tokenizer, standin, episode, scoring="channel", length_normalise=False)
    shown, names = metaicl.episode_demonstrations(standin, episode)
    demos = "\n\n".join(f"intent: {name}\nutterance: {text}" for text, name in shown)
    query = standin.texts_of(episode.query_x)[0]
    for j, name in enumerate(names):
        prefix = tokenizer(demos)["input_ids"] + tokenizer(f"\n\nintent: {name}\nutterance:")["input_ids"]
        target = tokenizer(" " + query)["input_ids"]
        with torch.no_grad():
            log_probs = model(input_ids=torch.tensor([prefix + target])).logits[0].double().log_softmax(-1)
        reference = sum(log_probs[len(prefix) + i - 1, t].item() for i, t in enumerate(target))
        assert scores[0, j].item() == pytest.approx(reference, abs=1e-4)
    with pytest.raises(ValueError, match="'direct'"):
        metaicl.predict(model, tokenizer, standin, episode, scoring="noisy")
