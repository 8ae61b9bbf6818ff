"""The quick profile's small causal LM (MiniLM word pieces, compact vocabulary) and the hub loader's error."""
import time

import pytest
import torch

from course_lib.data.clinc import load_clinc
from course_lib.text.causal_lm import load_causal_lm, small_causal_lm
from course_lib.text.encoder import ModelNotFoundError, default_model
from course_lib.text.prompting import build_prompt, label_scores


@pytest.fixture(scope="module")
def standin():
    return load_clinc("train", source="standin")


@pytest.fixture(scope="module")
def small_lm(standin):
    return small_causal_lm(list(standin.texts) + standin.label_names)


def test_compact_tokenizer_round_trips_the_texts_it_was_built_from_and_is_much_smaller(small_lm, standin):
    _, tokenizer = small_lm
    base = tokenizer.base
    for text in standin.texts[::97]:
        expected = base.decode(base(text, add_special_tokens=False)["input_ids"])
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == expected
    assert tokenizer.vocab_size < base.vocab_size / 10
    assert tokenizer("zygomorphic xylophones")["input_ids"].count(tokenizer.unk_token_id) >= 1


def test_real_clinc_text_round_trips(course_data):
    test = load_clinc("test", source="real")
    model, tokenizer = small_causal_lm(test.texts[:300])
    for text in test.texts[:300:17]:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == tokenizer.base.decode(tokenizer.base(text, add_special_tokens=False)["input_ids"])


def test_embeddings_are_minilm_word_pieces_tied_to_the_output_and_label_scores_runs(small_lm, standin):
    model, tokenizer = small_lm
    from transformers import AutoModel
    minilm = AutoModel.from_pretrained(default_model()[0]).get_input_embeddings().weight
    ids = tokenizer("send money")["input_ids"]
    assert torch.equal(model.get_input_embeddings().weight[ids], minilm[[tokenizer.base_ids[i] for i in ids]])
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    prompt = build_prompt([(standin.texts[0], standin.label_names[0])], standin.texts[1])
    with torch.no_grad():
        scores = label_scores(model.eval(), tokenizer, [prompt, standin.texts[2]], standin.label_names[:3])
    assert scores.shape == (2, 3) and torch.isfinite(scores).all() and (scores < 0).all()


def test_a_missing_model_fails_fast_in_one_sentence_naming_it_and_the_offline_alternative(tmp_path):
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as error:
        load_causal_lm(tmp_path / "no-such-model")
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert "no-such-model" in message and "small_causal_lm" in message and message.count(". ") == 0
