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

Which characters form each meta-split is the split **scheme** (``scheme=``; the first argument, ``split``,
names the meta-split, so the scheme that divides the characters among the meta-splits has its own word):

- ``"alphabets"`` (the default, the quick profile's): by alphabet, so meta-test characters come from alphabets
  never seen in meta-training (tables below).
- ``"random"``: the split of MAML's and Reptile's official code (cbfinn/maml ``data_generator.py``,
  openai/supervised-reptile ``omniglot.py``, ``split_dataset``): 1,200 of the 1,623 characters of both zips,
  drawn irrespective of alphabet, for meta-training, the other 423 for meta-test. The validation split is
  MAML's: 100 of the 1,200 (its ``num_val = 100``), so meta-training keeps 1,100; Reptile's code has no
  validation split (it trains on all 1,200 and watches the test set). The draw: the sorted character names
  ordered by keys from ``random.Random(RANDOM_SEED).random()`` (the codes shuffle ``os.listdir``'s order, which
  differs between file systems, so their exact characters cannot be recovered). On the small subset the same
  rule is scaled by its 242 characters: ``round(242 * 1200 / 1623) = 179`` for train and val, 15 of them val.
- ``"vinyals"``: the split of Vinyals et al. (2016) that ProtoNet's code uses, as published in
  jakesnell/prototypical-networks ``data/omniglot/splits/vinyals/{train,val,test}.txt`` (``VINYALS_SPLITS``:
  1,028 / 172 / 423 characters; their ``trainval.txt`` is train then val). The lists name all four rotations
  of every character, val and test included, so rotations default to True for every split. On the small
  subset, which holds none of the list's test characters, the subset's alphabet split is used instead,
  announced in one printed sentence.

Rotations (``rotations=None``) are otherwise those of Reptile's code: train only. MAML's code instead rotates
every class of every task, test tasks included, by a random multiple of 90 degrees. The offline stand-in has
its own split by (invented) alphabet whatever the scheme.

The ``"alphabets"`` scheme:

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
``cache_dir()/omniglot/processed/<split>-<scheme>-<key>.pt`` as uint8 tensors, so only the first load
decodes PNGs, and in this process for each such file. The key is a digest of everything the images depend on:
the archives' md5, the scheme and its tables (``SUBSET_SPLITS`` and ``FULL_VAL_ALPHABETS``, ``RANDOM_SEED``
and ``RANDOM_COUNTS``, or ``VINYALS_SPLITS``), ``IMAGE_SIZE`` and the processing version. A cache file that
cannot be read is rebuilt, and a printed sentence says so.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import random
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from .base import ClassDataset
from .sources import (DATA_SOURCES, DataNotFoundError, LocalSet, announce_fallback, cache_dir, describe_path,
                      fall_back_to_standin, fetch, find_local, looked_in, read_cache, save_atomically)
from .standin import load_standin
from .vinyals import VINYALS_SPLITS, vinyals_characters

SPLITS = ("train", "val", "test")
SCHEMES = ("alphabets", "random", "vinyals")
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
# the random scheme (module docstring): of the full set's 1,623 characters, 1,200 for train and val, 100 of them val
RANDOM_SEED = 1  # MAML's random.seed(1)
RANDOM_COUNTS = {"characters": 1623, "train and val": 1200, "val": 100}
_PROCESSING = "lanczos-invert-v1"  # part of the disk cache key: change it whenever processing changes


def load_omniglot(split: str, *, scheme: str = "alphabets", source: str = "auto", rotations: bool | None = None,
                  download: bool = True) -> ClassDataset:
    """One meta-split of Omniglot as a ``ClassDataset`` of ``[characters, 20, 1, 28, 28]`` images.

    Args:
        split: the meta-split, ``"train"``, ``"val"`` or ``"test"``.
        scheme: how the characters are divided among the meta-splits: ``"alphabets"`` (by alphabet),
            ``"random"`` (MAML's and Reptile's code) or ``"vinyals"`` (ProtoNet's code); see the module docstring.
        source: ``"auto"`` (real data if found or downloadable, else, with COURSE_DATA unset, the
            announced stand-in), ``"real"`` (real data or ``DataNotFoundError``) or ``"standin"``.
        rotations: add each character rotated by 90, 180, 270 degrees as 3 more classes; ``None`` means
            True for ``"train"``, and for every split of the ``"vinyals"`` scheme (its lists name the rotations).
        download: allow the official download when no local copy is found.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    if rotations is None:
        rotations = split == "train" or scheme == "vinyals"
    if source == "standin":
        return load_standin(split, rotations=rotations)
    try:
        archives = _locate(download)
    except DataNotFoundError as error:
        fall_back_to_standin(error, source=source, folder="omniglot", standin="procedural stand-in",
                             files="images_background.zip and images_evaluation.zip (or the two _small zips)")
        return load_standin(split, rotations=rotations)
    if scheme == "vinyals" and not _is_full(archives):
        announce_fallback("The Vinyals split names characters of the full Omniglot set only (the small subset holds "
                          "none of its test characters); using the small subset's split by alphabet instead.")
        scheme = "alphabets"
    cache_file = cache_dir() / "omniglot" / "processed" / f"{split}-{scheme}-{_cache_key(archives, scheme)[:16]}.pt"
    images, names = _processed_split(archives, cache_file, split, scheme)
    kind = "full set (50 alphabets)" if _is_full(archives) else "small subset (8 alphabets)"
    description = f"Omniglot, real: {kind}, {split} split{_SCHEME_WORDS[scheme]}, from {describe_path(archives.folder)}"
    return ClassDataset(images.float() / 255, names, description, rotations)


_SCHEME_WORDS = {"alphabets": "", "random": " of the random scheme (MAML's and Reptile's code)",
                 "vinyals": " of Vinyals et al. (ProtoNet's code)"}


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


def _cache_key(archives: LocalSet, scheme: str) -> str:
    """A digest of everything the processed images depend on, for the disk cache's file name.

    The processing version and ``IMAGE_SIZE``, the scheme and its tables, and the parts' content: each zip's
    md5 (checked by ``find_local`` or the download), each extracted folder's file names and sizes.
    """
    tables = {"alphabets": {"SUBSET_SPLITS": SUBSET_SPLITS, "FULL_VAL_ALPHABETS": FULL_VAL_ALPHABETS},
              "random": {"RANDOM_SEED": RANDOM_SEED, "RANDOM_COUNTS": RANDOM_COUNTS},
              "vinyals": {"VINYALS_SPLITS": VINYALS_SPLITS}}[scheme]
    keys = [_PROCESSING, str(IMAGE_SIZE), scheme, json.dumps(tables, sort_keys=True)]
    for name, part in zip(archives.names, archives.parts):
        if part.is_dir():
            listing = sorted(f"{p.relative_to(part).as_posix()} {p.stat().st_size}"
                             for p in part.glob("*/*/*.png"))
            keys.append(hashlib.md5("\n".join(listing).encode(), usedforsecurity=False).hexdigest())
        else:
            keys.append(DATA_SOURCES[f"omniglot/{name}"].md5)
    return hashlib.md5(" ".join(keys).encode(), usedforsecurity=False).hexdigest()


@functools.lru_cache(maxsize=None)
def _processed_split(archives: LocalSet, cache_file: Path, split: str,
                     scheme: str) -> tuple[Tensor, tuple[str, ...]]:
    """One split's images ``[characters, 20, 1, 28, 28]`` uint8 (ink = 255) and class names.

    Read from ``cache_file`` (its name holds ``_cache_key``) when it is there and readable; else
    decoded, then written there. Kept in this process per ``cache_file``, so a process that changes
    ``COURSE_CACHE`` reads and fills the new cache.
    """
    cached = read_cache(cache_file, "processed Omniglot cache")
    if cached is not None:
        return cached["images"], tuple(cached["class_names"])
    characters = _split_characters(archives, split, scheme)
    drawings: dict[str, dict[str, bytes]] = defaultdict(dict)  # "Alphabet/characterNN" -> {file: png}
    for part in archives.parts:  # Greek and Latin are in both small zips: same keys, stored once
        for character, file_name, png in _read_pngs(part, characters):
            drawings[character][file_name] = png
    names = tuple(sorted(drawings))
    images = torch.stack([_character_images(drawings[name]) for name in names])
    save_atomically({"images": images, "class_names": list(names)}, cache_file)
    return images, names


def _split_characters(archives: LocalSet, split: str, scheme: str) -> set[str]:
    """The characters ``"Alphabet/characterNN"`` of ``split`` under ``scheme`` (module docstring).

    Raises ``DataNotFoundError`` when the data lacks a character or alphabet the scheme's table names.
    """
    per_part = [_characters(part) for part in archives.parts]
    everything = set().union(*per_part)
    if scheme == "random":
        return set(random_split_characters(everything, split))
    if scheme == "vinyals":
        listed = vinyals_characters(split)
        missing = sorted(set(listed) - everything)
        if missing:
            raise DataNotFoundError(f"the Vinyals {split} list names {len(missing)} character(s) that are not in "
                                    f"the Omniglot data, such as {missing[0]}")
        return set(listed)
    if not _is_full(archives):
        alphabets = set(SUBSET_SPLITS[split])
    else:
        background, evaluation = ({name.split("/")[0] for name in names} for names in per_part)
        missing_alphabets = set(FULL_VAL_ALPHABETS) - background
        if missing_alphabets:
            raise DataNotFoundError(f"the Omniglot background set lacks the val alphabets {sorted(missing_alphabets)}")
        alphabets = {"train": background - set(FULL_VAL_ALPHABETS), "val": set(FULL_VAL_ALPHABETS),
                     "test": evaluation}[split]
    return {name for name in everything if name.split("/")[0] in alphabets}


def random_split_characters(characters: Iterable[str], split: str) -> tuple[str, ...]:
    """The ``split`` of the random scheme: MAML's and Reptile's rule, drawn from ``characters`` by a fixed seed.

    The sorted names are ordered by keys from ``random.Random(RANDOM_SEED).random()`` (the one sequence of
    ``random`` that Python promises to keep across versions); of ``n`` characters the first
    ``round(n * 1200 / 1623)`` are train and val, the last ``round(n * 100 / 1623)`` of those val, the rest test.
    On the full set: 1,100 train, 100 val, 423 test. Returns the split's names, sorted.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    keys = random.Random(RANDOM_SEED)
    drawn = sorted(sorted(characters), key=lambda _: keys.random())
    total = RANDOM_COUNTS["characters"]
    train_and_val = round(len(drawn) * RANDOM_COUNTS["train and val"] / total)
    val = round(len(drawn) * RANDOM_COUNTS["val"] / total)
    chosen = {"train": drawn[:train_and_val - val], "val": drawn[train_and_val - val:train_and_val],
              "test": drawn[train_and_val:]}[split]
    if not chosen:
        raise ValueError(f"the random scheme leaves the {split} split empty: {len(drawn)} characters are too few "
                         "for its proportions (of 1,623 characters: 1,100 train, 100 val, 423 test)")
    return tuple(sorted(chosen))


def _characters(part: Path) -> set[str]:
    """The characters ``"Alphabet/characterNN"`` in a zip (``top/Alphabet/characterNN/...``) or an extracted
    folder (``Alphabet/characterNN/``)."""
    if part.is_dir():
        return {f"{path.parent.name}/{path.name}" for path in part.glob("*/*") if path.is_dir()}
    with zipfile.ZipFile(part) as archive:
        return {"/".join(name.split("/")[1:3]) for name in archive.namelist() if name.count("/") >= 3}


def _read_pngs(part: Path, characters: set[str]) -> Iterator[tuple[str, str, bytes]]:
    """Yield ``(character, file name, png bytes)`` for the drawings of ``characters`` (``"Alphabet/characterNN"``).

    Zips are read in place, never extracted, and only entries named exactly
    ``top/Alphabet/characterNN/file.png`` are read.
    """
    if part.is_dir():
        for path in sorted(part.glob("*/*/*.png")):
            character = f"{path.parent.parent.name}/{path.parent.name}"
            if character in characters:
                yield character, path.name, path.read_bytes()
        return
    with zipfile.ZipFile(part) as archive:
        for name in archive.namelist():
            pieces = name.split("/")
            if len(pieces) == 4 and f"{pieces[1]}/{pieces[2]}" in characters and pieces[3].endswith(".png"):
                yield f"{pieces[1]}/{pieces[2]}", pieces[3], archive.read(name)


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
