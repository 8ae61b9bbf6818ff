"""Where the course's data comes from, and how files are fetched and unpacked safely.

Introduced in 01_few_shot_problem. Every dataset file the course may download is listed once in
``DATA_SOURCES``, with its official URL and md5 checksum. Loaders look for a file in this order:

1. ``$COURSE_DATA/<folder>/<file>``: a folder you (or CI) point the course at;
2. ``cache_dir()/<folder>/<file>``: ``$COURSE_CACHE``, else ``~/.cache/course_lib``;
3. the official URL, downloaded into the cache and checked against its md5.

Safety rules: a download goes to a temporary file and is renamed into place only after its
checksum matches (``os.replace`` is atomic), zip entries that would land outside their target
folder are refused, and printed paths never show this machine's absolute paths (``describe_path``).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch


class DataNotFoundError(RuntimeError):
    """The data is neither local nor downloadable (for example: no network).

    ``reason`` is the short cause, such as ``"no network"``, for messages that explain a fallback.
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


class ChecksumError(RuntimeError):
    """A file's md5 differs from the one in ``DATA_SOURCES``: it is corrupt or not the official file."""


class UnsafeArchiveError(RuntimeError):
    """A zip archive holds an entry that would be written outside its target folder."""


class CorruptFileError(RuntimeError):
    """A file the course wrote (a checkpoint, a cache) cannot be read: truncated, corrupt, or not ours."""


@dataclass(frozen=True)
class DataFile:
    """One downloadable file: it lives at ``<folder>/<filename>`` in COURSE_DATA and in the cache."""

    folder: str
    filename: str
    url: str
    md5: str
    description: str

    @property
    def relative_path(self) -> str:
        return f"{self.folder}/{self.filename}"


_OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"

DATA_SOURCES: dict[str, DataFile] = {
    file.relative_path: file
    for file in [
        DataFile("omniglot", "images_background.zip", _OMNIGLOT_URL + "images_background.zip",
                 "68d2efa1b9178cc56df9314c21c6e718",
                 "Omniglot background set (30 alphabets, 964 characters)"),
        DataFile("omniglot", "images_evaluation.zip", _OMNIGLOT_URL + "images_evaluation.zip",
                 "6b91aef0f799c5bb55b94e3f2daec811",
                 "Omniglot evaluation set (20 alphabets, 659 characters)"),
        DataFile("omniglot", "images_background_small1.zip", _OMNIGLOT_URL + "images_background_small1.zip",
                 "e704a628b5459e08445c13499850abc4",
                 "Omniglot small subset 1 (5 alphabets, 136 characters)"),
        DataFile("omniglot", "images_background_small2.zip", _OMNIGLOT_URL + "images_background_small2.zip",
                 "b75a71a51d3b13f821f212756fe481fd",
                 "Omniglot small subset 2 (5 alphabets, 156 characters)"),
        DataFile("clinc150", "data_full.json",
                 "https://raw.githubusercontent.com/clinc/oos-eval/master/data/data_full.json",
                 "30c29dc6ab78edf3b5dfa640be204cde",
                 "CLINC150 intents (150 intents plus out-of-scope)"),
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


def md5sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike, expected: str) -> None:
    """Raise ``ChecksumError`` (naming the file and both hashes) unless ``path`` has md5 ``expected``."""
    actual = md5sum(path)
    if actual != expected:
        raise ChecksumError(f"checksum mismatch for {Path(path).name}: expected md5 {expected}, got {actual}")


def download(url: str, dest: str | os.PathLike, md5: str, timeout: float = 10) -> Path:
    """Download ``url`` to ``dest``, atomically, keeping it only if its md5 matches.

    The bytes stream into a temporary file next to ``dest``; after the checksum matches the file is
    renamed to ``dest`` with ``os.replace``, so ``dest`` is either complete or absent. A network
    failure raises ``DataNotFoundError`` and is remembered: later calls for the same URL in this
    process fail at once instead of waiting for the timeout again.
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
            _stream(url, out, timeout)
        actual = md5sum(temp_path)
        if actual != md5:
            raise ChecksumError(f"checksum mismatch for {dest.name} downloaded from {url}: expected md5 "
                                f"{md5}, got {actual}; the download was discarded")
        os.replace(temp_path, dest)
    finally:
        temp_path.unlink(missing_ok=True)
    return dest


def _stream(url: str, out, timeout: float) -> None:
    """Copy ``url`` into the open binary file ``out``; network errors become ``DataNotFoundError``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as error:
        reason = failure_reason(error, timeout)
        _failed_downloads[url] = reason
        raise DataNotFoundError(f"Could not download {url}: {reason}.", reason) from error


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


def fetch(relative_path: str, *, download_missing: bool = True, timeout: float = 10) -> Path:
    """The local copy of ``DATA_SOURCES[relative_path]``: from COURSE_DATA, the cache, or downloaded.

    Files found in COURSE_DATA or the cache are checked against their md5 too.
    """
    source = DATA_SOURCES[relative_path]
    for root in (course_data_dir(), cache_dir()):
        if root is not None and (root / relative_path).is_file():
            verify_md5(root / relative_path, source.md5)
            return root / relative_path
    if not download_missing:
        raise DataNotFoundError(f"{relative_path} is not in COURSE_DATA or the cache, and downloads are off.",
                                "downloads are off")
    return download(source.url, cache_dir() / relative_path, source.md5, timeout)


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
        raise CorruptFileError(f"the {what} {describe_path(path)} cannot be read ({type(error).__name__}: "
                               f"{str(error).splitlines()[0] if str(error) else 'no detail'}); it is truncated "
                               f"or corrupt: {remedy}") from error


_announced: set[str] = set()


def announce_fallback(message: str) -> None:
    """Print that a loader fell back to an offline stand-in, once per message and process.

    A notebook loads three splits; one sentence says it, not three.
    """
    if message not in _announced:
        _announced.add(message)
        print(message)
