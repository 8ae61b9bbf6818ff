"""Your own images as a few-shot dataset: one sub-folder per class.

``load_image_folder(root)`` reads a folder laid out as::

    root/
        cat/       001.jpg  002.png  ...      any number of images per class
        dog/       a.jpg  b.jpg  ...
        ...

Every sub-folder is a class, named by the folder. The images (any format Pillow reads: PNG, JPEG,
BMP, GIF, TIFF, WebP) are turned upright by their EXIF orientation, converted to grey (``channels=1``)
or RGB (``channels=3``), resized to ``image_size x image_size`` with Pillow's Lanczos filter
(the aspect ratio is not kept) and scaled to floats in [0, 1]. Hidden entries (names starting with
``.``) and files with other suffixes are skipped.

Classes may hold different numbers of images. :class:`ImageFolderDataset` stores them all in one
``[total_images, channels, image_size, image_size]`` uint8 tensor, class after class, so an
unbalanced folder costs no padding; ``EpisodeSampler`` draws each class's examples from its own
``class_size(c)``.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from .base import ClassDataset
from .sources import describe_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CHANNELS = {1: "L", 3: "RGB"}  # channels -> Pillow mode


class ImageFolderDataset(ClassDataset):
    """Images grouped by class, classes of any size (a :class:`ClassDataset` with a per-class size).

    Args:
        images: ``[total_images, channels, H, W]`` uint8 (0..255), the images of class 0, then of class 1, ...
        class_sizes: the number of images of each base class, in that order (each at least 1).
        class_names, source, rotations: as for :class:`ClassDataset`.

    ``examples(c, indices)`` returns floats in [0, 1]; ``examples_per_class`` is the size of the smallest
    class, so code written for equal classes stays within every class.
    """

    def __init__(self, images: Tensor, class_sizes: Sequence[int], class_names: Sequence[str], source: str,
                 rotations: bool = False):
        sizes = torch.as_tensor(list(class_sizes), dtype=torch.long)
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [total_images, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if len(sizes) != len(class_names):
            raise ValueError(f"{len(sizes)} class sizes for {len(class_names)} class names")
        if len(sizes) == 0 or int(sizes.min()) < 1:
            raise ValueError("every class needs at least one image")
        if int(sizes.sum()) != images.shape[0]:
            raise ValueError(f"the class sizes add up to {int(sizes.sum())}, but there are {images.shape[0]} images")
        self.images = images
        self.sizes = sizes
        self.starts = torch.cumsum(sizes, 0) - sizes      # class b's images: images[starts[b] : starts[b] + sizes[b]]
        self.base_class_names = list(class_names)
        self.source = source
        self.rotations = rotations
        self.real = True

    @property
    def num_base_classes(self) -> int:
        return len(self.sizes)

    @property
    def examples_per_class(self) -> int:
        return int(self.sizes.min())

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def class_size(self, class_index: int) -> int:
        if not 0 <= class_index < self.num_classes:
            raise IndexError(f"class {class_index} out of range for {self.num_classes} classes")
        return int(self.sizes[class_index // self.ROTATIONS if self.rotations else class_index])

    def base_examples(self, base_class: int, example_indices: Tensor) -> Tensor:
        example_indices = torch.as_tensor(example_indices)
        size = int(self.sizes[base_class])
        if example_indices.numel() and (int(example_indices.min()) < 0 or int(example_indices.max()) >= size):
            raise IndexError(f"class {self.base_class_names[base_class]!r} has {size} images (indices 0 to "
                             f"{size - 1}); asked for {example_indices.tolist()}")
        return self.images[(self.starts[base_class] + example_indices).to(self.images.device)].float() / 255

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> "ImageFolderDataset":
        """This dataset with its images on ``device`` (see :meth:`ClassDataset.to`); sizes stay on the host."""
        moved = copy.copy(self)
        moved.images = self.images.to(device)
        return moved

    def select_classes(self, base_classes: Sequence[int]) -> "ImageFolderDataset":
        """A dataset of the base classes ``base_classes`` only, in that order (a split by class)."""
        pieces = [self.images[self.starts[b]: self.starts[b] + self.sizes[b]] for b in base_classes]
        return ImageFolderDataset(torch.cat(pieces), [int(self.sizes[b]) for b in base_classes],
                                  [self.base_class_names[b] for b in base_classes], self.source, self.rotations)

    def __repr__(self) -> str:
        rot = ", rotations as extra classes" if self.rotations else ""
        return (f"ImageFolderDataset({self.num_classes} classes x {int(self.sizes.min())}-{int(self.sizes.max())}"
                f" images of shape {self.example_shape}{rot}; {self.source})")


def read_image(path: str | os.PathLike, image_size: int = 28, channels: int = 1) -> Tensor:
    """One image file as ``[channels, image_size, image_size]`` uint8, processed as the module says.

    Raises ``ValueError`` naming the file when Pillow cannot read it.
    """
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image).convert(CHANNELS[channels])
            small = upright.resize((image_size, image_size), Image.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read the image {describe_path(path)} ({type(error).__name__}: {error}); "
                         "remove it or replace it with a readable image") from error
    pixels = torch.from_numpy(np.asarray(small).copy())                  # [H, W] or [H, W, 3]
    return pixels[None] if channels == 1 else pixels.permute(2, 0, 1)


def load_image_folder(root: str | os.PathLike, image_size: int = 28, channels: int = 1, *,
                      rotations: bool = False) -> ImageFolderDataset:
    """The classes under ``root`` (one sub-folder each) as a dataset of ``[channels, image_size, image_size]``
    floats in [0, 1]; classes in the order of their sorted names, images in the order of their file names.

    Args:
        root: the folder of class folders.
        image_size: the side every image is resized to (28 for the course's conv net as in Omniglot;
            the conv net accepts any size of at least 16).
        channels: 1 (grey) or 3 (RGB).
        rotations: add each class rotated by 90, 180 and 270 degrees as 3 more classes (as for Omniglot).

    Raises ``FileNotFoundError`` when ``root`` is missing and ``ValueError`` for a folder without class
    folders, a class without images or an unreadable image, each naming the folder or file.
    """
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"the image folder {describe_path(root)} {what}")
    class_folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_folders:
        loose = len(_image_files(root))
        hint = f" (it holds {loose} images directly: move them into class folders)" if loose else ""
        raise ValueError(f"the image folder {describe_path(root)} has no class folders{hint}; "
                         "put the images of each class in a sub-folder named after the class")
    images, sizes = [], []
    for folder in class_folders:
        files = _image_files(folder)
        if not files:
            raise ValueError(f"the class folder {describe_path(folder)} holds no images (looked for "
                             f"{', '.join(IMAGE_SUFFIXES)}); add some or remove the folder")
        for path in files:
            try:
                images.append(read_image(path, image_size, channels))
            except ValueError as error:
                raise ValueError(f"class {folder.name!r} of {describe_path(root)}: {error}") from error.__cause__
        sizes.append(len(files))
    kind = "grey" if channels == 1 else "RGB"
    source = (f"image folder {describe_path(root)}: {len(sizes)} classes, {sum(sizes)} images "
              f"({min(sizes)} to {max(sizes)} per class), {kind} {image_size} x {image_size}")
    return ImageFolderDataset(torch.stack(images), sizes, [p.name for p in class_folders], source, rotations)


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, by name; hidden files and other suffixes are skipped."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
