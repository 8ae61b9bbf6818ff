"""An offline procedural stand-in for Omniglot: invented alphabets drawn with random pen strokes.

Introduced in 01_few_shot_problem. Without a network and without ``COURSE_DATA`` the notebooks
still run, on data built like Omniglot: alphabets of characters, each character drawn 20 times.

- An **alphabet** has its own style: a small bank of stroke shapes, a preference for curved or
  angular strokes, and a pen width. Its 20 characters are built from that bank, so characters of
  one alphabet look related, as in real scripts.
- A **character** is 2-4 strokes. A stroke has three control points ``p0, p1, p2`` in the unit
  square and is either the quadratic Bezier curve they define or the polyline ``p0 -> p1 -> p2``.
- A **drawing** of a character jitters every control point, rotates, scales and shifts the whole
  character a little and varies the pen width: the stand-in for 20 people drawing it.
- Drawings are rasterised with anti-aliasing from the distance of each pixel centre to the nearest
  stroke segment, to ``28 x 28`` floats in [0, 1] with ink = 1, like the real Omniglot images.

Splits (by alphabet, so meta-test characters come from alphabets never seen in meta-training):

========  =========  ==========  ========
split     alphabets  characters  drawings
========  =========  ==========  ========
train     30         600         12,000
val       5          100         2,000
test      10         200         4,000
========  =========  ==========  ========

Everything is deterministic given the seed: alphabet ``a`` is drawn from the torch seed
``1000 * seed + a``, so one split can be generated without the others.
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch
from torch import Tensor

from .base import ClassDataset

SPLIT_ALPHABETS = {"train": range(0, 30), "val": range(30, 35), "test": range(35, 45)}
CHARACTERS_PER_ALPHABET = 20
DRAWINGS_PER_CHARACTER = 20
IMAGE_SIZE = 28
MAX_STROKES = 4
SHAPES_PER_ALPHABET = 6
POINTS_PER_STROKE = 5  # each stroke is drawn as a polyline through 5 points (4 segments)
MARGIN = 2.0  # pixels between the unit square and the image border


def load_standin(split: str, *, seed: int = 0, rotations: bool = False) -> ClassDataset:
    """The stand-in's ``split`` as a ``ClassDataset`` of ``[characters, 20, 1, 28, 28]`` images.

    The images are a copy of the in-process cache, so changing them cannot affect later loads.
    """
    images, names = _cached_split(split, seed)
    source = (f"Omniglot offline stand-in (procedural strokes, seed {seed}), {split} split"
              " — not real Omniglot")
    return ClassDataset(images.clone(), names, source, rotations, real=False)


@functools.lru_cache(maxsize=None)
def _cached_split(split: str, seed: int) -> tuple[Tensor, tuple[str, ...]]:
    """``generate_split``, once per split and seed in this process."""
    return generate_split(split, seed)


def generate_split(split: str, seed: int = 0) -> tuple[Tensor, tuple[str, ...]]:
    """All drawings of one split (``load_standin`` keeps them for the rest of the process).

    Returns:
        images: ``[characters, 20, 1, 28, 28]`` float32 in [0, 1], ink = 1.
        names: ``"Procedural_07/character03"`` for each character.
    """
    if split not in SPLIT_ALPHABETS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLIT_ALPHABETS)}")
    alphabets = SPLIT_ALPHABETS[split]
    images = torch.cat([draw_alphabet(torch.Generator().manual_seed(1000 * seed + a)) for a in alphabets])
    names = tuple(f"Procedural_{a:02d}/character{c + 1:02d}"
                  for a in alphabets for c in range(CHARACTERS_PER_ALPHABET))
    return images, names


def draw_alphabet(generator: torch.Generator) -> Tensor:
    """One alphabet: ``[20 characters, 20 drawings, 1, 28, 28]`` float32 in [0, 1]."""
    shapes, curved_share, pen_width = _alphabet_style(generator)
    controls, curved = _characters(shapes, curved_share, generator)
    drawings = _drawings(controls, generator)  # [characters, drawings, strokes, 3, 2]
    points = stroke_points(drawings, curved[:, None])  # [characters, drawings, strokes, points, 2]
    widths = pen_width * _uniform(generator, drawings.shape[:2], 0.8, 1.2)
    pixels = MARGIN + (IMAGE_SIZE - 2 * MARGIN) * points
    images = rasterize(pixels.flatten(0, 1), widths.flatten())
    return images.view(CHARACTERS_PER_ALPHABET, DRAWINGS_PER_CHARACTER, 1, IMAGE_SIZE, IMAGE_SIZE)


def _alphabet_style(generator: torch.Generator) -> tuple[Tensor, float, float]:
    """An alphabet's bank of stroke shapes ``[6, 3, 2]`` (centred), its share of curves, its pen width."""
    shapes = _uniform(generator, (SHAPES_PER_ALPHABET, 3, 2), -0.3, 0.3)
    shapes = shapes - shapes.mean(dim=1, keepdim=True)
    curved_share = _uniform(generator, (), 0.0, 1.0).item()
    pen_width = _uniform(generator, (), 1.3, 2.3).item()  # pixels
    return shapes, curved_share, pen_width


def _characters(shapes: Tensor, curved_share: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The alphabet's characters: each stroke is a bank shape, rotated, scaled and placed.

    Returns:
        controls: ``[characters, 4 strokes, 3, 2]`` control points; unused strokes lie far outside
            the image, so they leave no ink.
        curved: ``[characters, 4 strokes]`` True for a Bezier curve, False for a polyline.
    """
    n = (CHARACTERS_PER_ALPHABET, MAX_STROKES)
    strokes = shapes[torch.randint(SHAPES_PER_ALPHABET, n, generator=generator)]  # [characters, 4, 3, 2]
    angle = _uniform(generator, n, 0.0, 2 * math.pi)
    scale = _uniform(generator, n, 0.7, 1.3)
    centre = _uniform(generator, (*n, 1, 2), 0.3, 0.7)
    controls = centre + scale[..., None, None] * _rotate(strokes, angle[..., None])
    n_strokes = torch.randint(2, MAX_STROKES + 1, (CHARACTERS_PER_ALPHABET, 1), generator=generator)
    used = torch.arange(MAX_STROKES) < n_strokes
    controls = torch.where(used[..., None, None], controls, torch.full_like(controls, -100.0))
    curved = torch.rand(n, generator=generator) < curved_share
    return controls, curved


def _drawings(controls: Tensor, generator: torch.Generator) -> Tensor:
    """20 drawings of each character: jittered control points, then a small rotation, scale, shift.

    ``controls`` is ``[characters, strokes, 3, 2]``; returns ``[characters, 20, strokes, 3, 2]``.
    """
    n = (CHARACTERS_PER_ALPHABET, DRAWINGS_PER_CHARACTER)
    jitter = 0.05 * torch.randn((*n, *controls.shape[1:]), generator=generator)  # 5% of the box
    points = controls[:, None] + jitter
    angle = _uniform(generator, n, -0.2, 0.2)[..., None, None]  # radians, about +-11 degrees
    scale = _uniform(generator, n, 0.85, 1.15)[..., None, None, None]
    shift = _uniform(generator, (*n, 1, 1, 2), -0.08, 0.08)
    return 0.5 + shift + scale * _rotate(points - 0.5, angle)


def stroke_points(controls: Tensor, curved: Tensor) -> Tensor:
    """Points along each stroke: ``controls [..., 3, 2]``, ``curved [...]`` -> ``[..., 5, 2]``.

    A curved stroke follows the quadratic Bezier curve ``(1-t)^2 p0 + 2t(1-t) p1 + t^2 p2``; an
    angular one the polyline ``p0 -> p1 -> p2`` (reached at t = 0, 1/2, 1).
    """
    t = torch.linspace(0, 1, POINTS_PER_STROKE)[:, None]  # [points, 1]
    p0, p1, p2 = controls[..., 0:1, :], controls[..., 1:2, :], controls[..., 2:3, :]
    bezier = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t**2 * p2
    first_half = p0 + 2 * t * (p1 - p0)
    second_half = p1 + (2 * t - 1) * (p2 - p1)
    polyline = torch.where(t <= 0.5, first_half, second_half)
    return torch.where(curved[..., None, None], bezier, polyline)


def rasterize(points: Tensor, widths: Tensor, size: int = IMAGE_SIZE, chunk: int = 10) -> Tensor:
    """Anti-aliased drawings of polylines: ``points [N, strokes, P, 2]`` in pixels -> ``[N, size, size]``.

    A pixel's ink is ``clamp(width / 2 + 1/2 - distance, 0, 1)`` where ``distance`` runs from the
    pixel centre to the nearest segment: full ink inside the pen, a one-pixel soft edge around it.
    ``widths [N]`` are pen widths in pixels. Drawings are processed ``chunk`` at a time so the
    ``[chunk, segments, pixels]`` intermediates stay small (about 0.5 MB): large temporaries would
    cost more in memory traffic and page faults than the arithmetic itself.
    """
    starts = points[:, :, :-1].flatten(1, 2)  # [N, segments, 2]
    ends = points[:, :, 1:].flatten(1, 2)
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    row, col = torch.meshgrid(centres, centres, indexing="ij")
    pixels = torch.stack([col.flatten(), row.flatten()], dim=-1)  # [size * size, 2] as (x, y)
    with _one_thread():
        distance = torch.cat([_distance_to_segments(pixels, starts[i:i + chunk], ends[i:i + chunk])
                              for i in range(0, len(points), chunk)])  # [N, size * size]
    ink = (widths[:, None] / 2 + 0.5 - distance).clamp(0, 1)
    return ink.view(-1, size, size)


def _distance_to_segments(pixels: Tensor, starts: Tensor, ends: Tensor) -> Tensor:
    """Distance from each pixel ``[P, 2]`` to the nearest segment of each drawing: ``[N, P]``.

    ``starts`` and ``ends`` are the segments' end points, ``[N, S, 2]`` for N drawings of S segments.
    The closest point of segment ``a -> b`` to ``p`` is ``a + t (b - a)`` with
    ``t = clamp((p - a) . (b - a) / |b - a|^2, 0, 1)``. x and y are kept apart so every
    intermediate is a plain ``[N, S, P]`` tensor; in-place updates (``-=``, ``square_``) save
    a third of the time, all of which goes into these few lines.
    """
    ax, ay = starts[..., 0, None], starts[..., 1, None]  # [N, S, 1]
    dx, dy = ends[..., 0, None] - ax, ends[..., 1, None] - ay  # b - a
    px, py = pixels[:, 0] - ax, pixels[:, 1] - ay  # p - a: [N, S, P]
    t = ((px * dx + py * dy) / (dx * dx + dy * dy).clamp_min(1e-8)).clamp_(0, 1)
    px -= t * dx  # now p - (a + t (b - a)): from the closest point of the segment to p
    py -= t * dy
    return (px.square_() + py.square_()).amin(dim=1).sqrt_()


@contextlib.contextmanager
def _one_thread():
    """Run torch ops on one CPU thread inside the block, then restore the previous setting.

    For thousands of small ops one thread is at most twice as slow as two on an idle machine, but
    it cannot be stalled by another process keeping the second core busy (two threads were
    measured 10x slower then).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rotate(points: Tensor, angle: Tensor) -> Tensor:
    """Rotate ``points [..., 2]`` about the origin by ``angle`` (radians, broadcast to ``points[..., 0]``)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    x, y = points[..., 0], points[..., 1]
    return torch.stack([cos * x - sin * y, sin * x + cos * y], dim=-1)


def _uniform(generator: torch.Generator, shape, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)
