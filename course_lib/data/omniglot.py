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
   an extracted folder (``images_background/``) may replace its zip. Zips are read in place. A
   ``COURSE_DATA/omniglot/`` without a complete set, or a COURSE_DATA that does not exist, is a
   ``CourseDataError`` naming what is missing (``sources.find_local``).
2. The official download of the full set into the cache, checked against its md5.
3. Otherwise, with COURSE_DATA unset, the offline procedural stand-in (``standin``), announced in one
   printed sentence. ``source="real"``, or a set COURSE_DATA, raises ``DataNotFoundError`` instead;
   ``source="standin"`` uses the stand-in directly.

Splits are by alphabet, so meta-test characters come from alphabets never seen in meta-training
(the papers split otherwise: MAML and Reptile's code train on 1,200 characters drawn at random,
irrespective of alphabet; ProtoNet uses the split of Vinyals et al., 1,200 characters for training
and validation):

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
242 characters and 4,840 drawings. Processed images are cached on disk in
``cache_dir()/omniglot/processed/<split>-<key>.pt`` as uint8 tensors, so only the first load decodes
PNGs, and in this process for each such file. The key is a digest of everything the images depend on:
the archives' md5, the split tables (``SUBSET_SPLITS``, ``FULL_VAL_ALPHABETS``), ``IMAGE_SIZE`` and
the processing version. A cache file that cannot be read is rebuilt, and a printed sentence says so.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from .base import ClassDataset
from .sources import (DATA_SOURCES, DataNotFoundError, LocalSet, cache_dir, describe_path, fall_back_to_standin, fetch,
                      find_local, looked_in, read_cache, save_atomically)
from .standin import load_standin

SPLITS = ("train", "val", "test")
SOURCES = ("auto", "real", "standin")
IMAGE_SIZE = 28
DRAWINGS_PER_CHARACTER = 20
DOWNLOAD_TIMEOUT = 5  # seconds without an answer before a download attempt gives up

FULL_SET = ("images_background", "images_evaluation")
SUBSET = ("images_background_small1", "images_background_small2")
FULL_FILES, SUBSET_FILES = (tuple(f"{name}.zip" for name in names) for names in (FULL_SET, SUBSET))
FULL_VAL_ALPHABETS = ("Bengali", "Futurama", "Hebrew", "Mkhedruli_(Georgian)", "Tagalog")
SUBSET_SPLITS = {
    "train": ("Balinese", "Japanese_(katakana)", "Korean", "Latin"),
    "val": ("Tagalog",),
    "test": ("Early_Aramaic", "Greek", "Sanskrit"),
}
_PROCESSING = "lanczos-invert-v1"  # part of the disk cache key: change it whenever processing changes


def load_omniglot(split: str, *, source: str = "auto", rotations: bool | None = None,
                  download: bool = True) -> ClassDataset:
    """One meta-split of Omniglot as a ``ClassDataset`` of ``[characters, 20, 1, 28, 28]`` images.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (see the module's split table).
        source: ``"auto"`` (real data if found or downloadable, else, with COURSE_DATA unset, the
            announced stand-in), ``"real"`` (real data or ``DataNotFoundError``) or ``"standin"``.
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
        fall_back_to_standin(error, source=source, folder="omniglot", standin="procedural stand-in",
                             files="images_background.zip and images_evaluation.zip (or the two _small zips)")
        return load_standin(split, rotations=rotations)
    cache_file = cache_dir() / "omniglot" / "processed" / f"{split}-{_cache_key(archives)[:16]}.pt"
    images, names = _processed_split(archives, cache_file, split)
    kind = "full set (50 alphabets)" if _is_full(archives) else "small subset (8 alphabets)"
    description = f"Omniglot, real: {kind}, {split} split, from {describe_path(archives.folder)}"
    return ClassDataset(images.float() / 255, names, description, rotations)


def _locate(allow_download: bool) -> LocalSet:
    """The first complete Omniglot set: COURSE_DATA, then the cache, then the official download.

    Raises ``DataNotFoundError`` saying in one sentence where we looked and why nothing was found
    (``CourseDataError`` for a wrong COURSE_DATA, see ``sources.find_local``).
    """
    found = find_local("omniglot", (FULL_FILES, SUBSET_FILES))
    if found is not None:
        return found
    if not allow_download:
        raise DataNotFoundError(f"Omniglot not found in {looked_in('omniglot')} and downloads are off "
                                "(download=False)", "downloads are off")
    try:  # the second archive is not tried once the first failed
        parts = tuple(fetch(f"omniglot/{name}", timeout=DOWNLOAD_TIMEOUT) for name in FULL_FILES)
    except DataNotFoundError as error:
        raise DataNotFoundError(f"Omniglot not found in {looked_in('omniglot')} and the download failed "
                                f"({error.reason})", error.reason) from error
    return LocalSet(cache_dir() / "omniglot", FULL_FILES, parts)


def _is_full(archives: LocalSet) -> bool:
    """Whether ``archives`` is the full set (else the small subset)."""
    return archives.names == FULL_FILES


def _cache_key(archives: LocalSet) -> str:
    """A digest of everything the processed images depend on, for the disk cache's file name.

    The processing version and ``IMAGE_SIZE``, the split tables, and the parts' content: each zip's
    md5 (checked by ``find_local`` or the download), each extracted folder's file names and sizes.
    """
    tables = json.dumps({"SUBSET_SPLITS": SUBSET_SPLITS, "FULL_VAL_ALPHABETS": FULL_VAL_ALPHABETS}, sort_keys=True)
    keys = [_PROCESSING, str(IMAGE_SIZE), tables]
    for name, part in zip(archives.names, archives.parts):
        if part.is_dir():
            listing = sorted(f"{p.relative_to(part).as_posix()} {p.stat().st_size}"
                             for p in part.glob("*/*/*.png"))
            keys.append(hashlib.md5("\n".join(listing).encode(), usedforsecurity=False).hexdigest())
        else:
            keys.append(DATA_SOURCES[f"omniglot/{name}"].md5)
    return hashlib.md5(" ".join(keys).encode(), usedforsecurity=False).hexdigest()


@functools.lru_cache(maxsize=None)
def _processed_split(archives: LocalSet, cache_file: Path, split: str) -> tuple[Tensor, tuple[str, ...]]:
    """One split's images ``[characters, 20, 1, 28, 28]`` uint8 (ink = 255) and class names.

    Read from ``cache_file`` (its name holds ``_cache_key``) when it is there and readable; else
    decoded, then written there. Kept in this process per ``cache_file``, so a process that changes
    ``COURSE_CACHE`` reads and fills the new cache.
    """
    cached = read_cache(cache_file, "processed Omniglot cache")
    if cached is not None:
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


def _split_alphabets(archives: LocalSet, split: str) -> set[str]:
    """The alphabets of ``split``: the subset's fixed table, or the full set's rule (module docstring)."""
    if not _is_full(archives):
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
