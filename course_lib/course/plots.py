"""The figures of the course: task grids, learning curves, accuracy with CI bands.

Introduced in 01_few_shot_problem. Every function draws on a Matplotlib axis (a new figure
when none is given) and returns the figure, with labelled axes and units.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..data.batches import Episode
from ..train import History


def _axes(ax, figsize=(6, 3.5)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_task_grid(episode: Episode, n_query_shown: int = 3, class_names: list[str] | None = None,
                   title: str | None = None):
    """One row per label: the support images, then a few query images of that label."""
    n_way = episode.n_way
    k_shot = len(episode.support_y) // n_way
    cols = k_shot + n_query_shown
    fig, axes = plt.subplots(n_way, cols, figsize=(1.1 * cols + 1.5, 1.1 * n_way), squeeze=False)
    for label in range(n_way):
        support = episode.support_x[episode.support_y == label]
        query = episode.query_x[episode.query_y == label][:n_query_shown]
        for col, image in enumerate(torch.cat([support, query])):
            ax = axes[label, col]
            ax.imshow(image.squeeze(0).cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if label == 0:
                ax.set_title("support" if col < k_shot else "query", fontsize=9)
        name = f"label {label}" + (f"\n{class_names[label]}" if class_names else "")
        axes[label, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_learning_curves(history: History, keys: tuple[str, ...] = ("loss",), ax=None,
                         ylabel: str = "loss", title: str | None = None):
    """``history`` series against the training step."""
    fig, ax = _axes(ax)
    for key in keys:
        steps, values = history.series(key)
        ax.plot(steps, values, label=key)
    ax.set_xlabel("meta-training step")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def plot_validation(history: History, metric: str = "accuracy", label: str | None = None, ax=None,
                    title: str | None = None):
    """The validation metric logged by :func:`~course_lib.train.train` against the step, with its
    95% CI as a shaded band (``val_<metric>`` and ``val_<metric>_ci95``; accuracy drawn in %)."""
    fig, ax = _axes(ax)
    steps, means = history.series(f"val_{metric}")
    _, ci95s = history.series(f"val_{metric}_ci95")
    scale = 100.0 if metric == "accuracy" else 1.0
    means = np.asarray(means) * scale
    ci95s = np.asarray(ci95s) * scale
    ax.plot(steps, means, marker="o", label=label or f"validation {metric}")
    ax.fill_between(steps, means - ci95s, means + ci95s, alpha=0.25, label="95% CI")
    ax.set_xlabel("meta-training step")
    ax.set_ylabel("query accuracy (%)" if metric == "accuracy" else f"query {metric}")
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig
