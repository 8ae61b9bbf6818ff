"""Tests of course_lib.data: Omniglot (real subset via COURSE_DATA), the stand-in, safe file handling.

Real-data tests need ``COURSE_DATA=../shared/data`` and skip with a reason without it.
"""
import os
import re
import socket
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from course_lib.data import ChecksumError, DataNotFoundError, UnsafeArchiveError, load_omniglot
from course_lib.data import omniglot, sources, standin
from course_lib.data.sources import (cache_dir, course_data_dir, describe_path, download, fetch,
                                     md5sum, safe_extract_zip)

SPLITS = ("train", "val", "test")
NO_COURSE_DATA = "COURSE_DATA is not set: real-data tests need COURSE_DATA=../shared/data"


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    """Each test starts as a new process does: no remembered download failure, no announcement made yet."""
    monkeypatch.setattr(sources, "_failed_downloads", {})
    monkeypatch.setattr(sources, "_announced", set())


@pytest.fixture
def no_data_anywhere(monkeypatch, tmp_path):
    """No COURSE_DATA, an empty cache, and a downloader that fails as it does without a network."""
    monkeypatch.delenv("COURSE_DATA", raising=False)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    calls = []

    def no_network(url, dest, md5, timeout=10, **limits):
        calls.append(url)
        raise DataNotFoundError(f"Could not download {url}: no network.", "no network")

    monkeypatch.setattr(sources, "download", no_network)
    return calls


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """The three splits of the shared small subset, without rotations, with a private cache."""
    if not os.environ.get("COURSE_DATA"):
        pytest.skip(NO_COURSE_DATA)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COURSE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield {split: load_omniglot(split, source="real", rotations=False) for split in SPLITS}


def alphabets(dataset):
    return {name.split("/")[0] for name in dataset.base_class_names}


# --- real Omniglot: the shared subset -------------------------------------------------------------

def test_subset_has_242_characters_and_4840_drawings(subset):
    assert sum(d.num_classes for d in subset.values()) == 242
    assert sum(d.data.shape[0] * d.data.shape[1] for d in subset.values()) == 4840
    names = [name for d in subset.values() for name in d.base_class_names]
    assert len(set(names)) == 242, "Greek and Latin, in both zips, are counted once"
    assert all(re.fullmatch(r"[\w()\-]+/character\d\d", name) for name in names)


def test_subset_images_are_28x28_ink_on_zero_background(subset):
    for dataset in subset.values():
        assert dataset.data.shape[1:] == (20, 1, 28, 28) and dataset.data.dtype == torch.float32
        assert dataset.data.min() >= 0 and dataset.data.max() <= 1
        assert dataset.data.mean() < 0.5, "ink (= 1) is the minority: the PNGs were inverted"
        assert dataset.data.max() > 0.9


def test_subset_splits_follow_the_table_and_share_no_alphabet(subset):
    for split, dataset in subset.items():
        assert alphabets(dataset) == set(omniglot.SUBSET_SPLITS[split])
        assert "Omniglot, real: small subset" in dataset.source
        assert "COURSE_DATA/omniglot" in dataset.source and str(course_data_dir()) not in dataset.source
    train, val, test = (alphabets(subset[split]) for split in SPLITS)
    assert not (train & val or train & test or val & test)


def test_rotations_are_extra_classes(subset):
    train = load_omniglot("train", source="real")  # rotations default to True for train
    assert train.rotations and train.num_classes == 4 * subset["train"].num_classes
    assert not load_omniglot("test", source="real").rotations
    idx = torch.arange(20)
    for k in (0, 5):
        upright, turned = train.examples(4 * k, idx), train.examples(4 * k + 1, idx)
        assert torch.equal(turned, torch.rot90(upright, 1, dims=(-2, -1)))


def test_processed_subset_is_cached_on_disk(subset):
    files = sorted(p.name.split("-")[0] for p in (cache_dir() / "omniglot" / "processed").glob("*.pt"))
    assert files == sorted(SPLITS)
    omniglot._processed_split.cache_clear()
    start = time.perf_counter()
    again = load_omniglot("test", source="real")
    assert time.perf_counter() - start < 1.0
    assert torch.equal(again.data, subset["test"].data)


def test_fetch_finds_and_verifies_a_file_in_course_data(monkeypatch, tmp_path):
    if not os.environ.get("COURSE_DATA"):
        pytest.skip(NO_COURSE_DATA)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    path = fetch("clinc150/data_full.json", download_missing=False)
    assert describe_path(path) == "COURSE_DATA/clinc150/data_full.json"


# --- real Omniglot: the full-set rule, on a tiny fake extracted full set -----------------------------

def write_fake_character(folder: Path, n_drawings: int = 20) -> None:
    """20 black-on-white 105 x 105 PNGs of a black square, like Omniglot's."""
    folder.mkdir(parents=True)
    image = Image.new("1", (105, 105), 1)
    image.paste(0, (30, 30, 75, 75))
    for i in range(n_drawings):
        image.save(folder / f"0001_{i + 1:02d}.png")


def test_full_set_split_rule_on_extracted_folders(monkeypatch, tmp_path):
    root = tmp_path / "data" / "omniglot"
    for alphabet in (*omniglot.FULL_VAL_ALPHABETS, "Latin"):
        write_fake_character(root / "images_background" / alphabet / "character01")
    write_fake_character(root / "images_evaluation" / "Angelic" / "character01")
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    train, val, test = (load_omniglot(split, source="real", rotations=False) for split in SPLITS)
    assert alphabets(train) == {"Latin"} and alphabets(test) == {"Angelic"}
    assert alphabets(val) == set(omniglot.FULL_VAL_ALPHABETS)
    assert "full set" in test.source and "COURSE_DATA/omniglot" in test.source
    image = test.data[0, 0, 0]
    assert image[14, 14] > 0.9 and image[2, 2] < 0.1, "black ink on white becomes 1 on 0"


def test_a_corrupt_zip_in_course_data_is_a_checksum_error(monkeypatch, tmp_path):
    for name in omniglot.SUBSET:
        (tmp_path / "data" / "omniglot").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "omniglot" / f"{name}.zip").write_bytes(b"truncated")
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ChecksumError, match="images_background_small1.zip: expected md5 e704a628"):
        load_omniglot("test")


# --- safe file handling -------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["../evil.txt", "/abs_evil.txt", "safe/../../evil.txt"])
def test_safe_extract_refuses_entries_outside_the_target(tmp_path, entry):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr(entry, "gotcha")
    target = tmp_path / "sandbox" / "out"
    with pytest.raises(UnsafeArchiveError, match="outside the target folder"):
        safe_extract_zip(archive, target)
    assert not target.exists() and not (tmp_path / "evil.txt").exists() and not Path("/abs_evil.txt").exists()
    assert not (tmp_path / "sandbox").exists() or not any((tmp_path / "sandbox").iterdir())


def test_safe_extract_extracts_a_good_zip(tmp_path):
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/b.txt", "hello")
    target = safe_extract_zip(archive, tmp_path / "out")
    assert (target / "a" / "b.txt").read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.zip", "out"], "no temporary folder left"


def test_download_checks_the_md5_and_leaves_nothing_on_mismatch(tmp_path):
    served = tmp_path / "served.bin"
    served.write_bytes(b"not the file you expected")
    dest = tmp_path / "downloads" / "data.zip"
    with pytest.raises(ChecksumError) as error:
        download(served.as_uri(), dest, md5="0" * 32)
    message = str(error.value)
    assert "data.zip" in message and "0" * 32 in message and md5sum(served) in message
    assert list(dest.parent.iterdir()) == [], "neither the file nor a temporary file is left"
    assert download(served.as_uri(), dest, md5=md5sum(served)).read_bytes() == served.read_bytes()


def test_a_failed_download_is_one_clear_error_and_is_not_retried(monkeypatch, tmp_path):
    calls = []

    def offline(url, timeout):
        calls.append(url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    for _ in range(2):
        with pytest.raises(DataNotFoundError, match="no network"):
            download("https://example.org/data.zip", tmp_path / "data.zip", md5="0" * 32)
    assert len(calls) == 1 and list(tmp_path.iterdir()) == []


def test_paths_are_described_without_this_machines_absolute_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COURSE_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COURSE_DATA", "shared")
    assert course_data_dir() == tmp_path / "shared"
    assert describe_path(tmp_path / "shared" / "omniglot" / "x.zip") == "COURSE_DATA/omniglot/x.zip"
    assert describe_path(cache_dir() / "omniglot") == "~/.cache/course_lib/omniglot"
    assert describe_path("/somewhere/else/file.zip") == ".../file.zip"
    monkeypatch.delenv("COURSE_DATA")
    assert course_data_dir() is None


# --- no data, no network: say so, and fall back only when allowed -----------------------------------

def test_real_without_data_or_network_names_course_data_and_the_standin(no_data_anywhere):
    with pytest.raises(DataNotFoundError) as error:
        load_omniglot("test", source="real")
    message = str(error.value)
    assert "COURSE_DATA" in message and "stand-in" in message and "source='standin'" in message
    assert len(no_data_anywhere) == 1, "the second archive is not tried after the first failed"


def test_auto_without_data_or_network_announces_the_standin(no_data_anywhere, capsys, tmp_path):
    dataset = load_omniglot("test")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "COURSE_DATA (unset)" in out and "stand-in" in out
    assert str(tmp_path) not in out
    assert "not real Omniglot" in dataset.source and dataset.num_classes == 200


def test_invalid_split_or_source_is_a_clear_error():
    with pytest.raises(ValueError, match="train, val, test"):
        load_omniglot("validation")
    with pytest.raises(ValueError, match="auto, real, standin"):
        load_omniglot("train", source="internet")


# --- the offline stand-in ------------------------------------------------------------------------

def test_standin_is_deterministic_and_seeded():
    first, names = standin.generate_split("val", seed=0)
    again, _ = standin.generate_split("val", seed=0)
    other, _ = standin.generate_split("val", seed=1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert len(set(names)) == len(names) == 100


def test_standin_split_sizes_and_images():
    sizes = {}
    for split in SPLITS:
        dataset = load_omniglot(split, source="standin", rotations=False)
        assert dataset.data.shape[1:] == (20, 1, 28, 28) and dataset.data.dtype == torch.float32
        assert dataset.data.min() >= 0 and dataset.data.max() <= 1 and dataset.data.mean() < 0.5
        sizes[split] = dataset.num_classes
    assert sizes == {"train": 600, "val": 100, "test": 200}
    train, val, test = (alphabets(load_omniglot(s, source="standin")) for s in SPLITS)
    assert not (train & val or train & test or val & test)
    assert load_omniglot("train", source="standin").num_classes == 2400, "train has rotations by default"


def test_standin_drawings_vary_within_a_class_and_classes_differ():
    images = load_omniglot("test", source="standin").data.flatten(2)  # [200, 20, 784]
    within = (images[:, 1:] - images[:, :1]).abs().amax(dim=(1, 2))
    assert (within > 0.5).all(), "every character has visibly different drawings"
    means = images.mean(dim=1)
    assert torch.cdist(means, means).add(torch.eye(len(means)) * 1e9).min() > 1.0


def test_standin_is_learnable_but_not_trivial_for_pixel_1nn():
    images = load_omniglot("test", source="standin").data.flatten(2)
    generator = torch.Generator().manual_seed(0)
    correct = total = 0
    for _ in range(300):  # 5-way 1-shot episodes, 5 queries per class
        classes = torch.randperm(len(images), generator=generator)[:5]
        picks = torch.stack([torch.randperm(20, generator=generator)[:6] for _ in classes])
        chosen = images[classes[:, None], picks]  # [5, 6, 784]
        predicted = torch.cdist(chosen[:, 1:].flatten(0, 1), chosen[:, 0]).argmin(dim=1)
        correct += (predicted == torch.arange(5).repeat_interleave(5)).sum().item()
        total += len(predicted)
    assert 0.35 < correct / total < 0.85


def test_a_fallback_is_announced_once_not_once_per_split(capsys):
    from course_lib.data.sources import announce_fallback
    for _ in range(3):
        announce_fallback("test data not found; using the offline stand-in instead.")
    assert capsys.readouterr().out.count("using the offline stand-in") == 1
