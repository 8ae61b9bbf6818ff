"""The Omniglot split of Vinyals et al. (2016), as ProtoNet's code publishes it: ``VINYALS_SPLITS``.

Introduced in 05_protonet. Snell et al.'s code reads ``data/omniglot/splits/vinyals/{train,val,test}.txt`` of
jakesnell/prototypical-networks (commit c9bb4d2), lines such as ``Angelic/character01/rot000``: every character
of a list with its four rotations (``rot000``, ``rot090``, ``rot180``, ``rot270``), in the order stored here.
Each list is a few runs of consecutive characters of one alphabet, so the table stores the runs,
``(alphabet, first, last)``: 1,028 characters for train, 172 for val, 423 for test (the 1,623 of both zips);
their ``trainval.txt`` is train followed by val. The split is by alphabet but for Gurmukhi, whose characters
1-41 are in train and 42-45 in test. ``tests/test_data_omniglot.py`` checks that the table expands to the
published files, byte for byte (their git blob ids).

The lists are from jakesnell/prototypical-networks, under the MIT License:

    Copyright (c) 2017 Jake Snell

    Permission is hereby granted, free of charge, to any person obtaining a copy
    of this software and associated documentation files (the "Software"), to deal
    in the Software without restriction, including without limitation the rights
    to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
    copies of the Software, and to permit persons to whom the Software is
    furnished to do so, subject to the following conditions:

    The above copyright notice and this permission notice shall be included in all
    copies or substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
    IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
    FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
    AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
    LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
    OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
    SOFTWARE.
"""
from __future__ import annotations

VINYALS_SPLITS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "train": (
        ("Angelic", 1, 20), ("Grantha", 1, 43), ("N_Ko", 1, 33), ("Aurek-Besh", 1, 26),
        ("Japanese_(hiragana)", 1, 52), ("Malay_(Jawi_-_Arabic)", 1, 40), ("Asomtavruli_(Georgian)", 1, 40),
        ("Sanskrit", 1, 42), ("Ojibwe_(Canadian_Aboriginal_Syllabics)", 1, 14), ("Korean", 1, 40),
        ("Arcadian", 1, 26), ("Greek", 1, 24), ("Alphabet_of_the_Magi", 1, 20),
        ("Blackfoot_(Canadian_Aboriginal_Syllabics)", 1, 14), ("Futurama", 1, 26), ("Gurmukhi", 1, 41),
        ("Tagalog", 1, 17), ("Anglo-Saxon_Futhorc", 1, 29), ("Braille", 1, 26), ("Cyrillic", 1, 33),
        ("Burmese_(Myanmar)", 1, 34), ("Avesta", 1, 26), ("Gujarati", 1, 48), ("Ge_ez", 1, 26),
        ("Syriac_(Estrangelo)", 1, 23), ("Atlantean", 1, 26), ("Japanese_(katakana)", 1, 47), ("Balinese", 1, 24),
        ("Atemayar_Qelisayer", 1, 26), ("Glagolitic", 1, 45), ("Tifinagh", 1, 55), ("Latin", 1, 26),
        ("Inuktitut_(Canadian_Aboriginal_Syllabics)", 1, 16),
    ),
    "val": (
        ("Hebrew", 1, 22), ("Mkhedruli_(Georgian)", 1, 41), ("Armenian", 1, 41), ("Early_Aramaic", 1, 22),
        ("Bengali", 1, 46),
    ),
    "test": (
        ("Gurmukhi", 42, 45), ("Kannada", 1, 41), ("Keble", 1, 26), ("Malayalam", 1, 47), ("Manipuri", 1, 40),
        ("Mongolian", 1, 30), ("Old_Church_Slavonic_(Cyrillic)", 1, 45), ("Oriya", 1, 46),
        ("Syriac_(Serto)", 1, 23), ("Sylheti", 1, 28), ("Tengwar", 1, 25), ("Tibetan", 1, 42), ("ULOG", 1, 26),
    ),
}


def vinyals_characters(split: str) -> tuple[str, ...]:
    """The characters of one Vinyals list, ``"Alphabet/characterNN"``, in the published order."""
    if split not in VINYALS_SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(VINYALS_SPLITS)}")
    return tuple(f"{alphabet}/character{number:02d}"
                 for alphabet, first, last in VINYALS_SPLITS[split] for number in range(first, last + 1))
