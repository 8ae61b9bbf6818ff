"""Tests of course_lib.data.clinc: CLINC150 intents as few-shot classes, split by domain, and its stand-in.

Real-data tests need ``COURSE_DATA=../shared/data`` and skip with a reason without it.
"""
import json
import os
from collections import defaultdict

import pytest
import torch

from course_lib.data import ChecksumError, DataNotFoundError, IntentDataset, load_clinc
from course_lib.data import clinc, sources
from course_lib.data.sources import CourseDataError
from course_lib.data.episodes import EpisodeSampler, fixed_episodes

SPLITS = ("train", "val", "test")
NO_COURSE_DATA = "COURSE_DATA is not set: real-data tests need COURSE_DATA=../shared/data"


@pytest.fixture(scope="module")
def real():
    """The three splits of real CLINC150 from COURSE_DATA."""
    if not os.environ.get("COURSE_DATA"):
        pytest.skip(NO_COURSE_DATA)
    return {split: load_clinc(split, source="real") for split in SPLITS}


@pytest.fixture
def utterances_by_intent(course_data):
    """intent -> set of its in-scope utterances, read straight from data_full.json."""
    rows = json.loads((course_data / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    by_intent = defaultdict(set)
    for part in ("train", "val", "test"):
        for text, intent in rows[part]:
            by_intent[intent].add(text)
    return by_intent


@pytest.fixture
def no_data_anywhere(monkeypatch, tmp_path):
    """No COURSE_DATA, an empty cache, a hub that fails as it does without a network, nothing announced yet."""
    monkeypatch.delenv("COURSE_DATA", raising=False)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "_announced", set())
    calls = []

    def no_network():
        calls.append("hub")
        raise DataNotFoundError("the Hugging Face hub is unreachable: no network", "no network")

    monkeypatch.setattr(clinc, "_read_hub", no_network)
    return calls


def assert_ids_are_utterances_of_their_intents(dataset, episode, utterances_of):
    """Every support and query id of ``episode`` is an utterance of the intent its label stands for."""
    for x, y in [(episode.support_x, episode.support_y), (episode.query_x, episode.query_y)]:
        assert x.dtype == torch.int64
        for text, label in zip(dataset.texts_of(x), y.tolist()):
            assert text in utterances_of(dataset.intents[episode.task[label]])


# --- real CLINC150 ------------------------------------------------------------------------------

def test_real_clinc_has_150_intents_in_10_domains_with_150_utterances_each(real):
    assert sum(d.num_classes for d in real.values()) == 150
    assert len({domain for d in real.values() for domain in d.domains}) == 10
    for split, dataset in real.items():
        assert isinstance(dataset, IntentDataset) and dataset.real
        assert dataset.data.shape == (dataset.num_classes, 150) and dataset.data.dtype == torch.int64
        assert sorted(dataset.data.flatten().tolist()) == list(range(len(dataset.texts)))
        assert "CLINC150, real" in dataset.source and "COURSE_DATA/clinc150" in dataset.source
        assert "oos" not in dataset.intents


def test_real_splits_are_disjoint_and_cover_every_intent_and_domain(real):
    intents = {split: set(d.intents) for split, d in real.items()}
    domains = {split: set(d.domains) for split, d in real.items()}
    assert [len(domains[s]) for s in SPLITS] == [6, 1, 3]
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not intents[a] & intents[b] and not domains[a] & domains[b]
    assert set().union(*intents.values()) == {i for group in clinc.DOMAINS.values() for i in group}
    assert set().union(*domains.values()) == set(clinc.DOMAINS)
    for split, dataset in real.items():
        assert domains[split] == set(clinc.SPLIT_DOMAINS[split])
        assert all(intent in clinc.DOMAINS[domain] for intent, domain in zip(dataset.intents, dataset.domains))


def test_domain_table_in_the_code_is_the_official_domains_json(course_data):
    official = json.loads((course_data / "clinc150" / "domains.json").read_text(encoding="utf-8"))
    assert {d: sorted(i) for d, i in official.items()} == {d: sorted(i) for d, i in clinc.DOMAINS.items()}


def test_real_text_episodes_have_the_right_shapes_and_their_ids_are_utterances_of_their_intents(
        real, utterances_by_intent):
    test = real["test"]
    sampler = EpisodeSampler(test, n_way=5, k_shot=2, n_query=3)
    for episode in fixed_episodes(sampler, 20, seed=0):
        assert episode.support_x.shape == (10,) and episode.query_x.shape == (15,)
        assert episode.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        assert not set(episode.support_x.tolist()) & set(episode.query_x.tolist())
        assert_ids_are_utterances_of_their_intents(test, episode, utterances_by_intent.__getitem__)


def test_within_domain_episodes_use_all_15_intents_of_one_held_out_domain(real, utterances_by_intent):
    by_domain = real["test"].by_domain()
    assert sorted(by_domain) == sorted(clinc.SPLIT_DOMAINS["test"])
    for domain, subset in by_domain.items():
        assert subset.num_classes == 15 and set(subset.domains) == {domain}
        assert set(subset.intents) == set(clinc.DOMAINS[domain])
        assert domain in subset.source and subset.real
        episode = EpisodeSampler(subset, n_way=15, k_shot=1, n_query=5).sample(torch.Generator().manual_seed(0))
        assert sorted(episode.task.tolist()) == list(range(15))
        assert_ids_are_utterances_of_their_intents(subset, episode, utterances_by_intent.__getitem__)


def test_label_names_are_intents_in_words(real):
    names = dict(zip(real["test"].intents, real["test"].label_names))
    assert names["transfer"] == "transfer" and names["pin_change"] == "pin change"
    assert names["shopping_list_update"] == "shopping list update"


def test_a_corrupt_data_file_in_course_data_is_a_checksum_error(monkeypatch, tmp_path):
    (tmp_path / "data" / "clinc150").mkdir(parents=True)
    (tmp_path / "data" / "clinc150" / "data_full.json").write_text("{}")
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ChecksumError, match="data_full.json: expected md5 30c29dc6"):
        load_clinc("test")


# --- the hub path, on a small fake of the hub dataset ---------------------------------------------

def test_the_hub_dataset_is_read_by_intent_without_out_of_scope(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    monkeypatch.delenv("COURSE_DATA", raising=False)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    names = ["oos", *sorted(i for group in clinc.DOMAINS.values() for i in group)]
    features = datasets.Features({"text": datasets.Value("string"), "intent": datasets.ClassLabel(names=names)})

    def part(copies):  # ``copies`` utterances of every intent; oos gets just one
        rows = [(f"{name} {k}", label) for label, name in enumerate(names) for k in range(1 if label == 0 else copies)]
        return datasets.Dataset.from_dict({"text": [t for t, _ in rows], "intent": [y for _, y in rows]}, features)

    fake_hub = datasets.DatasetDict(train=part(3), validation=part(1), test=part(2))
    monkeypatch.setattr(clinc, "_hub_unreachable_reason", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config: fake_hub)
    test = load_clinc("test", source="real")
    assert "Hugging Face hub" in test.source and test.real
    assert test.data.shape == (45, 6), "3 + 1 + 2 utterances per intent: oos (1) does not set the minimum"
    assert set(test.domains) == set(clinc.SPLIT_DOMAINS["test"]) and "oos" not in test.intents
    assert test.texts_of(test.data[0, :3]) == [f"{test.intents[0]} {k}" for k in range(3)]


# --- no data, no network: say so, and fall back only when allowed -----------------------------------

def test_real_without_data_or_network_names_course_data_and_the_standin(no_data_anywhere):
    with pytest.raises(DataNotFoundError) as error:
        load_clinc("test", source="real")
    message = str(error.value)
    assert "COURSE_DATA" in message and "stand-in" in message and "source='standin'" in message
    assert no_data_anywhere == ["hub"]


def test_auto_without_data_or_network_announces_the_standin(no_data_anywhere, capsys, tmp_path):
    dataset = load_clinc("test")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "COURSE_DATA (unset)" in out and "Hugging Face hub" in out
    assert "using the offline generated stand-in" in out and str(tmp_path) not in out
    assert not dataset.real and "not real CLINC150" in dataset.source


def test_without_downloads_the_hub_is_not_asked(no_data_anywhere):
    with pytest.raises(DataNotFoundError, match="downloads are off"):
        load_clinc("test", source="real", download=False)
    assert no_data_anywhere == []


def test_a_course_data_that_does_not_exist_is_an_error_not_the_standin(no_data_anywhere, monkeypatch, tmp_path,
                                                                       capsys):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "typo"))
    with pytest.raises(CourseDataError, match=r"COURSE_DATA=.*typo does not exist: fix the path, or unset COURSE_DATA"):
        load_clinc("test")
    assert capsys.readouterr().out == "" and no_data_anywhere == []


def test_a_clinc_folder_in_course_data_without_data_full_json_names_it(no_data_anywhere, monkeypatch, tmp_path):
    (tmp_path / "data" / "clinc150").mkdir(parents=True)
    (tmp_path / "data" / "clinc150" / "domains.json").write_text("{}")
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    with pytest.raises(CourseDataError, match="COURSE_DATA/clinc150 is incomplete: it lacks data_full.json"):
        load_clinc("test")
    assert no_data_anywhere == [], "an incomplete COURSE_DATA is not papered over by the hub"


def test_with_course_data_set_clinc_found_nowhere_is_an_error_not_the_standin(no_data_anywhere, monkeypatch,
                                                                             tmp_path, capsys):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    with pytest.raises(DataNotFoundError) as error:
        load_clinc("test")
    message = str(error.value)
    assert "COURSE_DATA/clinc150 (no such folder) or the cache (COURSE_CACHE/clinc150)" in message
    assert "the Hugging Face hub failed (no network)" in message and "unset COURSE_DATA" in message
    assert capsys.readouterr().out == "" and no_data_anywhere == ["hub"]
    assert not load_clinc("test", source="standin").real, "the stand-in, when asked for"


def test_invalid_split_or_source_is_a_clear_error():
    with pytest.raises(ValueError, match="train, val, test"):
        load_clinc("validation")
    with pytest.raises(ValueError, match="auto, real, standin"):
        load_clinc("train", source="internet")


# --- the offline stand-in ------------------------------------------------------------------------

def test_standin_has_at_least_40_intents_in_at_least_4_domains_split_by_domain():
    splits = {split: load_clinc(split, source="standin") for split in SPLITS}
    intents = [i for d in splits.values() for i in d.intents]
    domains = {split: set(d.domains) for split, d in splits.items()}
    assert len(intents) == len(set(intents)) >= 40 and len(set().union(*domains.values())) >= 4
    assert not (domains["train"] & domains["val"] or domains["train"] & domains["test"]
                or domains["val"] & domains["test"])
    for split, dataset in splits.items():
        assert not dataset.real and "not real CLINC150" in dataset.source
        assert dataset.data.shape == (dataset.num_classes, clinc.STANDIN_UTTERANCES_PER_INTENT)
        assert dataset.num_classes >= 8, "5-way tasks and 8-way within-domain tasks fit in every split"


def test_standin_utterances_are_deterministic_distinct_and_varied():
    first = clinc.generate_utterances("pay_bill", seed=0)
    assert first == clinc.generate_utterances("pay_bill", seed=0)
    assert first != clinc.generate_utterances("pay_bill", seed=1)
    assert len(set(first)) == clinc.STANDIN_UTTERANCES_PER_INTENT
    assert len({text.split()[0] for text in first}) >= 5, "many paraphrase patterns, not one"
    assert {"electric", "water", "phone"} <= {w for text in first for w in text.split()}, "slots are filled"
    everything = [t for group in clinc.STANDIN_INTENTS.values() for i in group for t in clinc.generate_utterances(i)]
    assert len(everything) == len(set(everything)), "no utterance belongs to two intents"


def test_standin_text_episodes_map_to_their_intents():
    test = load_clinc("test", source="standin")
    sampler = EpisodeSampler(test, n_way=5, k_shot=1, n_query=4)
    for episode in fixed_episodes(sampler, 10, seed=0):
        assert episode.support_x.shape == (5,) and episode.query_x.shape == (20,)
        assert_ids_are_utterances_of_their_intents(test, episode, clinc.generate_utterances)
    for subset in test.by_domain().values():
        episode = EpisodeSampler(subset, n_way=8, k_shot=1, n_query=2).sample(torch.Generator().manual_seed(0))
        assert_ids_are_utterances_of_their_intents(subset, episode, clinc.generate_utterances)


def test_embedded_episodes_carry_the_vectors_of_the_sampled_utterances():
    test = load_clinc("test", source="standin")
    vectors = torch.randn(len(test.texts), 6)
    for subset in [test, *test.by_domain().values()]:
        embedded = subset.embedded(vectors)
        assert embedded.data.shape == (*subset.data.shape, 6) and embedded.real == subset.real
        ids = EpisodeSampler(subset, n_way=3, k_shot=2, n_query=1).sample(torch.Generator().manual_seed(0))
        vecs = EpisodeSampler(embedded, n_way=3, k_shot=2, n_query=1).sample(torch.Generator().manual_seed(0))
        assert torch.equal(vecs.support_x, vectors[ids.support_x]) and torch.equal(vecs.query_y, ids.query_y)
    with pytest.raises(ValueError, match="encode dataset.texts"):
        test.embedded(vectors[:-1])
