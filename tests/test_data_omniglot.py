"""Tests of course_lib.data: Omniglot (real subset via COURSE_DATA), the stand-in, safe file handling.

Real-data tests need ``COURSE_DATA=../shared/data`` and skip with a reason without it.
"""
import dataclasses
import hashlib
import http.server
import os
import random
import re
import socket
import threading
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from course_lib.data import ChecksumError, DataNotFoundError, UnsafeArchiveError, load_omniglot
from course_lib.data import omniglot, sources, standin, vinyals
from course_lib.data.sources import (CourseDataError, DownloadError, cache_dir, course_data_dir, describe_path,
                                     download, fetch, md5sum, safe_extract_zip)

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


@pytest.fixture
def fake_full_set(monkeypatch, tmp_path):
    """COURSE_DATA holding a tiny extracted full set (one character per alphabet: the val alphabets and
    Latin in the background set, Angelic in the evaluation set), and an empty private cache."""
    root = tmp_path / "data" / "omniglot"
    for alphabet in (*omniglot.FULL_VAL_ALPHABETS, "Latin"):
        write_fake_character(root / "images_background" / alphabet / "character01")
    write_fake_character(root / "images_evaluation" / "Angelic" / "character01")
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    return root


def processed_files():
    return sorted(p.name for p in (cache_dir() / "omniglot" / "processed").glob("*.pt"))


def test_full_set_split_rule_on_extracted_folders(fake_full_set):
    train, val, test = (load_omniglot(split, source="real", rotations=False) for split in SPLITS)
    assert alphabets(train) == {"Latin"} and alphabets(test) == {"Angelic"}
    assert alphabets(val) == set(omniglot.FULL_VAL_ALPHABETS)
    assert "full set" in test.source and "COURSE_DATA/omniglot" in test.source
    image = test.data[0, 0, 0]
    assert image[14, 14] > 0.9 and image[2, 2] < 0.1, "black ink on white becomes 1 on 0"


def test_changing_the_subset_split_table_changes_the_processed_cache(course_data, monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    before = load_omniglot("val", source="real")
    files_before = processed_files()
    monkeypatch.setitem(omniglot.SUBSET_SPLITS, "val", ("Latin",))
    after = load_omniglot("val", source="real")
    assert alphabets(before) == {"Tagalog"} and alphabets(after) == {"Latin"}
    assert len(files_before) == 1 and len(processed_files()) == 2, "a new cache file, the old one kept"


def test_changing_the_full_sets_val_alphabets_changes_the_processed_cache(fake_full_set, monkeypatch):
    val = load_omniglot("val", source="real")
    first, *rest = omniglot.FULL_VAL_ALPHABETS
    monkeypatch.setattr(omniglot, "FULL_VAL_ALPHABETS", tuple(rest))
    smaller = load_omniglot("val", source="real")
    assert alphabets(val) - alphabets(smaller) == {first}
    assert len(processed_files()) == 2


def test_a_corrupt_processed_cache_is_rebuilt_with_one_sentence(fake_full_set, capsys):
    first = load_omniglot("test", source="real")
    [name] = processed_files()
    path = cache_dir() / "omniglot" / "processed" / name
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a full disk or a killed process
    omniglot._processed_split.cache_clear()    # what a new process sees
    capsys.readouterr()
    again = load_omniglot("test", source="real")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "processed Omniglot cache" in out and name in out and "rebuilding it" in out
    assert torch.equal(again.data, first.data)
    assert torch.load(path, weights_only=True)["class_names"] == ["Angelic/character01"], "the file was rewritten"


def test_a_new_cache_folder_in_the_same_process_gets_its_processed_files(fake_full_set, monkeypatch, tmp_path):
    load_omniglot("test", source="real")
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "another-cache"))
    load_omniglot("test", source="real")
    assert len(processed_files()) == 1, "the in-process copy does not hide an empty disk cache"


# --- the papers' split schemes: random (MAML's and Reptile's code) and Vinyals' (ProtoNet's) ----------------

FAKE_FULL_NAMES = [f"Alphabet_{a:02d}/character{c:02d}" for a in range(50) for c in range(1, 34)][:1623]


def test_the_random_scheme_on_1623_characters_is_1100_train_100_val_423_test_drawn_irrespective_of_alphabet():
    shuffled = list(FAKE_FULL_NAMES)
    random.Random(7).shuffle(shuffled)
    splits = {split: omniglot.random_split_characters(FAKE_FULL_NAMES, split) for split in SPLITS}
    assert {split: len(names) for split, names in splits.items()} == {"train": 1100, "val": 100, "test": 423}
    assert len(splits["train"]) + len(splits["val"]) == 1200, "the papers' 1,200 characters, MAML's 100 val among them"
    assert set().union(*splits.values()) == set(FAKE_FULL_NAMES), "every character in exactly one split"
    assert sum(map(len, splits.values())) == 1623
    assert all(omniglot.random_split_characters(shuffled, split) == splits[split] for split in SPLITS), \
        "the draw depends on the names only, not on the order a file system lists them in"
    train_alphabets, test_alphabets = ({name.split("/")[0] for name in splits[split]} for split in ("train", "test"))
    assert len(train_alphabets & test_alphabets) > 40, "test characters come from the training alphabets too"
    # the same characters on every machine and Python version: a change of the rule or seed fails here
    digest = hashlib.md5("\n".join(splits["test"]).encode()).hexdigest()
    assert digest == "cc6e8c01baff5af7c6edec4f992aa658"


def test_the_random_scheme_refuses_too_few_characters_to_fill_every_split():
    with pytest.raises(ValueError, match="leaves the val split empty: 8 characters are too few"):
        omniglot.random_split_characters(FAKE_FULL_NAMES[:8], "val")
    assert len(omniglot.random_split_characters(FAKE_FULL_NAMES[:9], "val")) == 1


def add_fake_characters(root: Path, alphabet: str, numbers) -> None:
    for number in numbers:
        write_fake_character(root / "images_background" / alphabet / f"character{number:02d}")


def test_the_random_scheme_on_a_fake_full_set_follows_the_rule_with_rotations_on_train_only(fake_full_set):
    add_fake_characters(fake_full_set, "Latin", range(2, 9))  # 14 characters: 9 train, 1 val, 4 test
    loaded = {split: load_omniglot(split, scheme="random", source="real") for split in SPLITS}
    everything = [*(f"{a}/character01" for a in (*omniglot.FULL_VAL_ALPHABETS, "Latin", "Angelic")),
                  *(f"Latin/character{n:02d}" for n in range(2, 9))]
    for split, dataset in loaded.items():
        assert tuple(dataset.base_class_names) == omniglot.random_split_characters(everything, split)
        assert "random scheme" in dataset.source and "full set" in dataset.source
    assert [loaded[split].num_base_classes for split in SPLITS] == [9, 1, 4]
    assert loaded["train"].rotations and loaded["train"].num_classes == 36
    assert not loaded["val"].rotations and not loaded["test"].rotations
    assert all(name.split("-")[1] == "random" for name in processed_files())


def test_the_scheme_is_part_of_the_processed_caches_key(fake_full_set):
    add_fake_characters(fake_full_set, "Latin", range(2, 9))
    by_alphabet = load_omniglot("test", source="real")
    at_random = load_omniglot("test", scheme="random", source="real")
    assert alphabets(by_alphabet) == {"Angelic"} and by_alphabet.base_class_names != at_random.base_class_names
    assert len(processed_files()) == 2
    omniglot._processed_split.cache_clear()    # a new process reads each scheme's own file
    assert load_omniglot("test", scheme="random", source="real").base_class_names == at_random.base_class_names


def git_blob_id(text: str) -> str:
    """The id git gives a file holding ``text``: sha1 of ``blob <size>\\0`` and the bytes."""
    data = text.encode()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_the_vinyals_table_expands_to_the_published_lists_byte_for_byte():
    def published(split):
        return "".join(f"{name}/rot{angle:03d}\n" for name in vinyals.vinyals_characters(split)
                       for angle in (0, 90, 180, 270))
    # git blob ids of data/omniglot/splits/vinyals/*.txt in jakesnell/prototypical-networks, commit c9bb4d2
    assert git_blob_id(published("train")) == "1700c3bfc67fb5f28fa432e85469bff7356ac95e"
    assert git_blob_id(published("val")) == "193c2e29608b94fa54d18b3c8d85f94f5fca7743"
    assert git_blob_id(published("test")) == "fe895e26218a3d2e35a540c4ca5c9812911006e9"
    assert git_blob_id(published("train") + published("val")) == "53e568bb13c5c4731e458ed256a0f8551729b3e5", \
        "their trainval.txt is train then val"
    names = [name for split in SPLITS for name in vinyals.vinyals_characters(split)]
    assert [len(vinyals.vinyals_characters(split)) for split in SPLITS] == [1028, 172, 423]
    assert len(set(names)) == 1623


@pytest.fixture
def tiny_vinyals_lists(monkeypatch):
    """Vinyals lists naming the fake full set's characters (the real ones name 1,623 characters)."""
    for split, runs in {"train": (("Latin", 1, 1), ("Bengali", 1, 1)), "val": (("Hebrew", 1, 1),),
                        "test": (("Angelic", 1, 1),)}.items():
        monkeypatch.setitem(vinyals.VINYALS_SPLITS, split, runs)


def test_the_vinyals_scheme_reads_the_lists_with_every_split_rotated(fake_full_set, tiny_vinyals_lists):
    loaded = {split: load_omniglot(split, scheme="vinyals", source="real") for split in SPLITS}
    assert {split: tuple(d.base_class_names) for split, d in loaded.items()} == {
        "train": ("Bengali/character01", "Latin/character01"), "val": ("Hebrew/character01",),
        "test": ("Angelic/character01",)}
    assert all(d.rotations and d.num_classes == 4 * d.num_base_classes for d in loaded.values()), \
        "the lists name four rotations of every character, val and test included"
    assert "Vinyals" in loaded["test"].source
    assert not load_omniglot("test", scheme="vinyals", source="real", rotations=False).rotations


def test_the_vinyals_scheme_rejects_a_list_naming_a_character_not_in_the_data(fake_full_set, tiny_vinyals_lists,
                                                                              monkeypatch):
    monkeypatch.setitem(vinyals.VINYALS_SPLITS, "test", (("Angelic", 1, 3),))
    with pytest.raises(DataNotFoundError, match=re.escape("the Vinyals test list names 2 character(s) that are "
                                                          "not in the Omniglot data, such as Angelic/character02")):
        load_omniglot("test", scheme="vinyals", source="real")


def test_on_the_small_subset_random_is_scaled_and_vinyals_is_the_announced_alphabet_split(course_data, monkeypatch,
                                                                                          tmp_path, capsys):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    at_random = {split: load_omniglot(split, scheme="random", source="real") for split in SPLITS}
    assert [at_random[split].num_base_classes for split in SPLITS] == [164, 15, 63], "242 * (1100, 100, 423) / 1623"
    assert len(set().union(*(d.base_class_names for d in at_random.values()))) == 242
    assert capsys.readouterr().out == ""
    test = load_omniglot("test", scheme="vinyals", source="real")
    val = load_omniglot("val", scheme="vinyals", source="real")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "Vinyals split names characters of the full Omniglot set only" in out
    assert alphabets(test) == set(omniglot.SUBSET_SPLITS["test"]) and alphabets(val) == {"Tagalog"}
    assert test.rotations and val.rotations, "rotated as the Vinyals lists are"


def test_a_corrupt_zip_in_course_data_is_a_checksum_error(monkeypatch, tmp_path):
    for name in omniglot.SUBSET:
        (tmp_path / "data" / "omniglot").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "omniglot" / f"{name}.zip").write_bytes(b"truncated")
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ChecksumError, match="images_background_small1.zip: expected md5 e704a628"):
        load_omniglot("test")


# --- a set COURSE_DATA is never replaced by the stand-in ----------------------------------------------

def test_a_course_data_that_does_not_exist_is_an_error_for_auto_and_real(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COURSE_DATA", "no/such/folder")
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    for source in ("auto", "real"):
        with pytest.raises(CourseDataError) as error:
            load_omniglot("test", source=source)
        message = str(error.value)
        assert message.startswith("COURSE_DATA=no/such/folder does not exist")
        assert "fix the path" in message and "unset COURSE_DATA" in message
    assert capsys.readouterr().out == "", "no stand-in was announced"
    assert "not real Omniglot" in load_omniglot("test", source="standin").source, "the stand-in, when asked for"


@pytest.mark.parametrize("present, missing", [
    (["images_background.zip"], "images_evaluation.zip (beside images_background.zip)"),
    (["images_background_small2.zip"], "images_background_small1.zip (beside images_background_small2.zip)"),
    (["images_evaluation"], "images_background.zip (beside images_evaluation.zip)"),
    ([], "images_background.zip and images_evaluation.zip, or images_background_small1.zip and "
         "images_background_small2.zip"),
])
def test_an_incomplete_omniglot_folder_in_course_data_names_the_missing_files(monkeypatch, tmp_path, present,
                                                                              missing):
    folder = tmp_path / "data" / "omniglot"
    folder.mkdir(parents=True)
    for name in present:
        (folder / name).mkdir() if not name.endswith(".zip") else (folder / name).write_bytes(b"zip")
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CourseDataError, match=re.escape(f"COURSE_DATA/omniglot is incomplete: it lacks {missing}")):
        load_omniglot("train")


def test_with_course_data_set_omniglot_found_nowhere_is_an_error_not_the_standin(no_data_anywhere, monkeypatch,
                                                                                tmp_path, capsys):
    (tmp_path / "data").mkdir()  # COURSE_DATA exists but holds no omniglot folder
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    for download_allowed in (True, False):
        with pytest.raises(DataNotFoundError) as error:
            load_omniglot("test", download=download_allowed)
        message = str(error.value)
        assert "COURSE_DATA/omniglot (no such folder) or the cache (COURSE_CACHE/omniglot)" in message
        assert ("the download failed (no network)" if download_allowed else "downloads are off") in message
        assert "unset COURSE_DATA or use the offline stand-in with source='standin'" in message
    assert capsys.readouterr().out == "" and len(no_data_anywhere) == 1


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


def test_download_checks_a_given_sha256_beside_the_md5(tmp_path):
    served = tmp_path / "served.bin"
    served.write_bytes(b"a wheel")
    dest = tmp_path / "downloads" / "package.whl"
    with pytest.raises(ChecksumError) as error:
        download(served.as_uri(), dest, md5=md5sum(served), sha256="0" * 64)
    assert "package.whl" in str(error.value) and "sha256 " + "0" * 64 in str(error.value)
    assert hashlib.sha256(b"a wheel").hexdigest() in str(error.value) and not dest.exists()
    sha256 = hashlib.sha256(b"a wheel").hexdigest()
    assert download(served.as_uri(), dest, md5=md5sum(served), sha256=sha256).read_bytes() == b"a wheel"


class _TestServer(http.server.BaseHTTPRequestHandler):
    """Serves ``/ok`` (100 bytes), ``/drip`` (1 byte every 20 ms of an announced 100 kB), ``/big`` (5,000
    bytes, announced), ``/big-unannounced`` (5,000 bytes, no Content-Length) and ``/short`` (100 of an
    announced 1,000 bytes, then the connection closes)."""

    BODY = bytes(range(100))

    def do_GET(self):
        self.send_response(200)
        announced = {"/ok": 100, "/drip": 100_000, "/big": 5000, "/short": 1000}.get(self.path)
        if announced is not None:
            self.send_header("Content-Length", str(announced))
        self.end_headers()
        try:
            if self.path == "/drip":
                for _ in range(announced):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.02)
            elif self.path in ("/big", "/big-unannounced"):
                self.wfile.write(b"x" * 5000)
            else:
                self.wfile.write(self.BODY)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
            pass
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    """A local HTTP server (127.0.0.1, a free port) in a thread: its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TestServer)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_download_that_drips_stops_at_its_deadline_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "downloads" / "data.zip"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"longer than its 1 s deadline \([\d,]+ bytes so far\)"):
        download(f"{server}/drip", dest, md5="0" * 32, deadline=1.0)
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 10, f"stopped after {elapsed:.1f} s: the dripping server sends for 2,000 s"
    assert list(dest.parent.iterdir()) == [], "neither the file nor a .part file is left"


@pytest.mark.parametrize("path, message", [
    ("/big", "the server announced 5,000 bytes, more than the 1,000 this file may have"),
    ("/big-unannounced", "the server sent more than the 1,000 bytes this file may have"),
    ("/short", "the connection closed after 100 of 1,000 bytes"),
])
def test_a_download_too_large_or_cut_short_is_an_error_and_leaves_nothing(server, tmp_path, path, message):
    dest = tmp_path / "downloads" / "data.zip"
    with pytest.raises(DownloadError, match=re.escape(message)):
        download(f"{server}{path}", dest, md5="0" * 32, max_bytes=1000)
    assert list(dest.parent.iterdir()) == []


def test_a_download_within_its_limits_is_kept(server, tmp_path):
    dest = tmp_path / "data.bin"
    body = _TestServer.BODY
    md5 = hashlib.md5(body).hexdigest()
    assert download(f"{server}/ok", dest, md5=md5, deadline=5, max_bytes=len(body)).read_bytes() == body


def test_fetch_caps_a_download_at_twice_the_files_known_size(server, monkeypatch, tmp_path):
    monkeypatch.delenv("COURSE_DATA", raising=False)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    official = sources.DATA_SOURCES["clinc150/data_full.json"]
    monkeypatch.setitem(sources.DATA_SOURCES, official.relative_path,
                        dataclasses.replace(official, url=f"{server}/big-unannounced", size=2000))
    with pytest.raises(DownloadError, match="more than the 4,000 bytes"):
        fetch(official.relative_path)
    assert list((tmp_path / "clinc150").iterdir()) == []


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


def test_invalid_split_scheme_or_source_is_a_clear_error():
    with pytest.raises(ValueError, match="train, val, test"):
        load_omniglot("validation")
    with pytest.raises(ValueError, match="unknown scheme 'maml': choose one of alphabets, random, vinyals"):
        load_omniglot("train", scheme="maml")
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
