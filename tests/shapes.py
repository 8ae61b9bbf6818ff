"""A small image folder of synthetic shapes for end-to-end tests: one class per shape, ragged, png and jpg."""
import random
from pathlib import Path

from PIL import Image, ImageDraw

SIDE = 24


def _draw(draw: ImageDraw.ImageDraw, shape: str, dx: int, dy: int, width: int) -> None:
    c, lo, hi = 12, 5, 19
    box = [(lo + dx, lo + dy), (hi + dx, hi + dy)]
    if shape == "bar":
        draw.line([(lo + dx, c + dy), (hi + dx, c + dy)], fill=255, width=width)
    elif shape == "column":
        draw.line([(c + dx, lo + dy), (c + dx, hi + dy)], fill=255, width=width)
    elif shape == "square":
        draw.rectangle(box, outline=255, width=width)
    elif shape == "cross":
        draw.line([(lo + dx, c + dy), (hi + dx, c + dy)], fill=255, width=width)
        draw.line([(c + dx, lo + dy), (c + dx, hi + dy)], fill=255, width=width)
    elif shape == "diagonal":
        draw.line(box, fill=255, width=width)
    elif shape == "ring":
        draw.ellipse(box, outline=255, width=width)


SHAPES = ("bar", "column", "square", "cross", "diagonal", "ring")


def write_shapes_folder(root: Path, sizes=(6, 8, 5, 7, 6, 9), seed: int = 0) -> Path:
    """``root/<shape>/NN.png|jpg``: ``sizes[i]`` jittered white-on-black drawings of shape ``i``."""
    rng = random.Random(seed)
    for shape, n in zip(SHAPES, sizes):
        (root / shape).mkdir(parents=True)
        for i in range(n):
            image = Image.new("L", (SIDE, SIDE), 0)
            _draw(ImageDraw.Draw(image), shape, rng.randint(-3, 3), rng.randint(-3, 3), rng.randint(1, 3))
            image.save(root / shape / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    return root
