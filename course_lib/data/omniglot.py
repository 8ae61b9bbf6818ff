"""Omniglot: 1,623 handwritten characters from 50 alphabets, each drawn by 20 people.

Introduced in 01_few_shot_problem. Omniglot (Lake, Salakhutdinov and Tenenbaum, 2015) is the
few-shot benchmark of the MAML and Prototypical Networks papers. ``load_omniglot(split)`` returns
one meta-split as a ``ClassDataset`` of ``[characters, 20, 1, 28, 28]`` float32 images in [0, 1],
ink = 1 and background = 0 (the PNGs are black ink on white, so they are inverted), resized from
105 x 105 with Pillow's Lanczos filter (antialiased). Class names are ``"Alphabet/characterNN"``.

Where the data comes from (``source="auto"`` tries these in order):

1. ``$COURSE_DATA/omniglot/``, then ``cache_dir()/omniglot/``; the first folder holding a complete
   set wins. A complete set is the full set (``images_background.zip`` + ``images_evaluation.zip``)
   or else the small subset (``images_background_small1.zip`` + ``images_background_small2.zip``);
   an extracted folder (``images_background/``) may replace its zip. Zips are read in place.
2. The official download of the full set into the cache, checked against its md5.
3. Otherwise the offline procedural stand-in (``standin``), announced in one printed sentence.
   ``source="real"`` raises ``DataNotFoundError`` instead; ``source="standin"`` uses it directly.

Splits are by alphabet, so meta-test characters come from alphabets never seen in meta-training:

==========  =====================================================  ==========  ==========
split       full set (50 alphabets)                                alphabets   characters
==========  =====================================================  ==========  ==========
train       the background alphabets not in ``val``                25          812
val         Bengali, Futurama, Hebrew, Mkhedruli_(Georgian),       5           152
            Tagalog (fixed; Tagalog is the subset's val too)
test        every alphabet of ``images_evaluation`` (Lake et al.)  20          659
==========  =====================================================  ==========  ==========

==========  ==============================================  ==========  ==========
split       small subset (8 alphabets)                      alphabets   characters
==========  ==============================================  ==========  ==========
train       Balinese, Japanese_(katakana), Korean, Latin    4           137
val         Tagalog                                         1           17
test        Early_Aramaic, Greek, Sanskrit                  3           88
==========  ==============================================  ==========  ==========

Greek and Latin are in both small zips with identical drawings; they are counted once, giving
242 characters and 4,840 drawings. Processed images are cached twice: in this process
(``functools``) and on disk in ``cache_dir()/omniglot/processed/`` as uint8 tensors, keyed by the
archives' md5 and the split, so only the first load decodes PNGs.
"""
from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from .base import ClassDataset
from .sources import (DATA_SOURCES, DataNotFoundError, announce_fallback, cache_dir, course_data_dir, describe_path,
                      download as download_file, save_atomically, verify_md5)
from .standin import load_standin

SPLITS = ("train", "val", "test")
SOURCES = ("auto", "real", "standin")
IMAGE_SIZE = 28
DRAWINGS_PER_CHARACTER = 20
DOWNLOAD_TIMEOUT = 5  # seconds without an answer before a download attempt gives up

FULL_SET = ("images_background", "images_evaluation")
SUBSET = ("images_background_small1", "images_background_small2")
FULL_VAL_ALPHABETS = ("Bengali", "Futurama", "Hebrew", "Mkhedruli_(Georgian)", "Tagalog")
SUBSET_SPLITS = {
    "train": ("Balinese", "Japanese_(katakana)", "Korean", "Latin"),
    "val": ("Tagalog",),
    "test": ("Early_Aramaic", "Greek", "Sanskrit"),
}
_PROCESSING = "lanczos-28-v1"  # part of the disk cache key: change it whenever processing changes


class _Archives(NamedTuple):
    """A complete Omniglot set on disk: the folder, its parts (zips or extracted folders), full or subset."""

    folder: Path
    parts: tuple[Path, ...]
    full: bool


def load_omniglot(split: str, *, source: str = "auto", rotations: bool | None = None,
                  download: bool = True) -> ClassDataset:
    """One meta-split of Omniglot as a ``ClassDataset`` of ``[characters, 20, 1, 28, 28]`` images.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (see the module's split table).
        source: ``"auto"`` (real data if found or downloadable, else the announced stand-in),
            ``"real"`` (real data or ``DataNotFoundError``) or ``"standin"`` (offline stand-in).
        rotations: add each character rotated by 90, 180, 270 degrees as 3 more classes;
            ``None`` means True for ``"train"`` and False for ``"val"`` and ``"test"``.
        download: allow the official download when no local copy is found.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    if rotations is None:
        rotations = split == "train"
    if source == "standin":
        return load_standin(split, rotations=rotations)
    try:
        archives = _locate(download)
    except DataNotFoundError as error:
        if source == "real":
            raise DataNotFoundError(
                f"{error}. Put images_background.zip and images_evaluation.zip (or the two _small "
                "zips) in COURSE_DATA/omniglot, connect to the internet, or use the offline "
                "stand-in with source='standin'.", error.reason) from None
        announce_fallback(f"{error}; using the offline procedural stand-in instead.")
        return load_standin(split, rotations=rotations)
    images, names = _processed_split(archives, _fingerprint(archives.parts), split)
    kind = "full set (50 alphabets)" if archives.full else "small subset (8 alphabets)"
    description = f"Omniglot, real: {kind}, {split} split, from {describe_path(archives.folder)}"
    return ClassDataset(images.float() / 255, names, description, rotations)


def _locate(allow_download: bool) -> _Archives:
    """The first complete Omniglot set: COURSE_DATA, then the cache, then the official download.

    Raises ``DataNotFoundError`` saying in one sentence where we looked and why nothing was found.
    """
    data_dir = course_data_dir()
    for root in (data_dir, cache_dir()):
        if root is None:
            continue
        for names, full in ((FULL_SET, True), (SUBSET, False)):
            parts = [_find_part(root / "omniglot", name) for name in names]
            if all(parts):
                return _Archives(root / "omniglot", tuple(parts), full)
    looked = describe_path(data_dir / "omniglot") if data_dir else "COURSE_DATA (unset)"
    looked += f" or the cache ({describe_path(cache_dir() / 'omniglot')})"
    if not allow_download:
        raise DataNotFoundError(f"Omniglot not found in {looked} and downloads are off (download=False)",
                                "downloads are off")
    try:
        return _Archives(cache_dir() / "omniglot", _download_full_set(), True)
    except DataNotFoundError as error:
        raise DataNotFoundError(f"Omniglot not found in {looked} and the download failed ({error.reason})",
                                error.reason) from error


def _find_part(folder: Path, name: str) -> Path | None:
    """``folder/name.zip`` if present, else the extracted folder ``folder/name``, else None."""
    for candidate in (folder / f"{name}.zip", folder / name):
        if candidate.exists():
            return candidate
    return None


def _download_full_set() -> tuple[Path, ...]:
    """Download ``images_background.zip`` and ``images_evaluation.zip`` into the cache (md5-checked)."""
    paths = []
    for name in FULL_SET:
        source = DATA_SOURCES[f"omniglot/{name}.zip"]
        path = download_file(source.url, cache_dir() / source.relative_path, source.md5, DOWNLOAD_TIMEOUT)
        print(f"Downloaded the {source.description} to {describe_path(path)} (md5 checked).")
        paths.append(path)
    return tuple(paths)


def _fingerprint(parts: tuple[Path, ...]) -> str:
    """A key for the parts' content: each zip's md5 (checked), each folder's file names and sizes."""
    keys = [_PROCESSING]
    for part in parts:
        if part.is_dir():
            listing = sorted(f"{p.relative_to(part).as_posix()} {p.stat().st_size}"
                             for p in part.glob("*/*/*.png"))
            keys.append(hashlib.md5("\n".join(listing).encode(), usedforsecurity=False).hexdigest())
        else:
            expected = DATA_SOURCES[f"omniglot/{part.name}"].md5
            verify_md5(part, expected)
            keys.append(expected)
    return hashlib.md5(" ".join(keys).encode(), usedforsecurity=False).hexdigest()


@functools.lru_cache(maxsize=None)
def _processed_split(archives: _Archives, fingerprint: str, split: str) -> tuple[Tensor, tuple[str, ...]]:
    """One split's images ``[characters, 20, 1, 28, 28]`` uint8 (ink = 255) and class names.

    Read from the disk cache when it holds this fingerprint and split; else decoded, then cached.
    """
    cache_file = cache_dir() / "omniglot" / "processed" / f"{split}-{fingerprint[:16]}.pt"
    if cache_file.is_file():
        cached = torch.load(cache_file, weights_only=True)
        return cached["images"], tuple(cached["class_names"])
    alphabets = _split_alphabets(archives, split)
    drawings: dict[str, dict[str, bytes]] = defaultdict(dict)  # "Alphabet/characterNN" -> {file: png}
    for part in archives.parts:  # Greek and Latin are in both small zips: same keys, stored once
        for alphabet, character, file_name, png in _read_pngs(part, alphabets):
            drawings[f"{alphabet}/{character}"][file_name] = png
    names = tuple(sorted(drawings))
    images = torch.stack([_character_images(drawings[name]) for name in names])
    save_atomically({"images": images, "class_names": list(names)}, cache_file)
    return images, names


def _split_alphabets(archives: _Archives, split: str) -> set[str]:
    """The alphabets of ``split``: the subset's fixed table, or the full set's rule (module docstring)."""
    if not archives.full:
        return set(SUBSET_SPLITS[split])
    background, evaluation = (_alphabets(part) for part in archives.parts)
    missing = set(FULL_VAL_ALPHABETS) - background
    if missing:
        raise DataNotFoundError(f"the Omniglot background set lacks the val alphabets {sorted(missing)}")
    return {"train": background - set(FULL_VAL_ALPHABETS), "val": set(FULL_VAL_ALPHABETS),
            "test": evaluation}[split]


def _alphabets(part: Path) -> set[str]:
    """The alphabet names in a zip (``top/Alphabet/...``) or an extracted folder (``Alphabet/...``)."""
    if part.is_dir():
        return {path.name for path in part.iterdir() if path.is_dir()}
    with zipfile.ZipFile(part) as archive:
        return {name.split("/")[1] for name in archive.namelist() if name.count("/") >= 2}


def _read_pngs(part: Path, alphabets: set[str]) -> Iterator[tuple[str, str, str, bytes]]:
    """Yield ``(alphabet, character, file name, png bytes)`` for the drawings of ``alphabets``.

    Zips are read in place, never extracted, and only entries named exactly
    ``top/Alphabet/characterNN/file.png`` are read.
    """
    if part.is_dir():
        for path in sorted(part.glob("*/*/*.png")):
            if path.parent.parent.name in alphabets:
                yield path.parent.parent.name, path.parent.name, path.name, path.read_bytes()
        return
    with zipfile.ZipFile(part) as archive:
        for name in archive.namelist():
            pieces = name.split("/")
            if len(pieces) == 4 and pieces[1] in alphabets and pieces[3].endswith(".png"):
                yield pieces[1], pieces[2], pieces[3], archive.read(name)


def _character_images(pngs: dict[str, bytes]) -> Tensor:
    """The 20 drawings of one character, in file-name order: ``[20, 1, 28, 28]`` uint8, ink = 255."""
    if len(pngs) != DRAWINGS_PER_CHARACTER:
        raise ValueError(f"expected {DRAWINGS_PER_CHARACTER} drawings per character, found {len(pngs)}")
    return torch.stack([_png_to_ink(pngs[name]) for name in sorted(pngs)])[:, None]


def _png_to_ink(png: bytes) -> Tensor:
    """A 105 x 105 black-on-white PNG as a ``[28, 28]`` uint8 ink image (ink = 255, background = 0).

    Lanczos resampling averages over the whole footprint of each small pixel (antialiasing), so
    thin strokes become grey instead of vanishing or aliasing.
    """
    with Image.open(io.BytesIO(png)) as image:
        ink = ImageOps.invert(image.convert("L"))
        small = ink.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    return torch.from_numpy(np.asarray(small).copy())
