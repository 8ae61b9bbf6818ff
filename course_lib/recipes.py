"""Ready-made meta-training on your own images, and the one-line load of what it trained.

``python -m course_lib train ALGORITHM --data DIR --save FILE`` (see ``__main__``) and
:func:`train_on_folder` do the same thing:

1. read ``DIR`` with :func:`data.folder.load_image_folder` (one sub-folder per class);
2. hold out ``round(val_fraction * classes)`` classes, chosen by ``seed``: the learner never sees
   them in training, and the reported accuracy is measured on them (new classes, as in every
   few-shot benchmark);
3. meta-train the course's 4-block ``ConvNet`` with ProtoNet, MAML or Reptile through the one
   training loop (``train.train``) on N-way K-shot episodes of the training classes;
4. score it with the one evaluation protocol (``evaluate.evaluate_episodes``: mean and 95% CI) on
   fixed N-way K-shot episodes of the held-out classes;
5. write one file (``save_atomically``): the weights and everything needed to rebuild the learner
   (algorithm, conv net arguments, image size, channels, n_way, class names, the held-out scores).

``learner = load_learner(FILE)`` reads it back (``weights_only=True``: the file cannot run code) as a
:class:`Learner`, whose ``predict(episode)`` adapts to a new task's support set and returns query
logits ``[N*Q, N]``, so ``evaluate_episodes(learner.predict, episodes)`` scores it.

The default settings per algorithm (:data:`RECIPES`) are those of the papers' Omniglot experiments,
scaled to a small meta-batch: ProtoNet (Snell et al. 2017) with Adam 1e-3; MAML (Finn et al. 2017)
second order, inner step 0.4, 1 step in training and 3 at test time, Adam 1e-3; Reptile (Nichol
et al. 2018) with 5 inner Adam steps of 1e-3 (50 at test time) and an outer SGD step of 1, annealed
linearly to 0.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from . import runtime
from .data.batches import Episode
from .data.episodes import EpisodeSampler, fixed_episodes
from .data.folder import ImageFolderDataset, load_image_folder, read_image
from .data.sources import describe_path, read_torch_file, save_atomically
from .evaluate import EvalResult, eval_mode, evaluate_episodes
from .meta import maml, protonet, reptile
from .models import ConvNet
from .train import TrainConfig, train

FILE_FORMAT = "course_lib learner, version 1"
MIN_IMAGE_SIZE = 16  # the conv net halves the image 4 times: 16 -> 1 pixel


@dataclass(frozen=True)
class Recipe:
    """How one algorithm is built and trained by default.

    ``wrapper`` turns the conv net into the learner (``MAML``, ``Reptile``), with ``settings`` as its
    arguments; None means the conv net is the learner (ProtoNet). ``head``: the conv net ends in an
    ``n_way`` linear layer. ``loss``/``predict``: the algorithm's functions for the training loop and
    the evaluation protocol. The rest is the outer optimisation (``TrainConfig``).
    """

    loss: Callable[[nn.Module, Episode], Any]
    predict: Callable[[nn.Module, Episode], Tensor]
    wrapper: Callable[..., nn.Module] | None
    head: bool
    settings: dict[str, Any]
    meta_batch_size: int
    lr: float
    optimizer: str = "adam"
    lr_linear_decay: bool = False


RECIPES: dict[str, Recipe] = {
    "protonet": Recipe(protonet.loss, protonet.predict, None, head=False, settings={}, meta_batch_size=1, lr=1e-3),
    "maml": Recipe(maml.loss, maml.predict, maml.MAML, head=True,
                   settings={"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3}, meta_batch_size=4, lr=1e-3),
    "reptile": Recipe(reptile.loss, reptile.predict, reptile.Reptile, head=True,
                      settings={"inner_lr": 1e-3, "inner_steps": 5, "eval_inner_steps": 50}, meta_batch_size=5,
                      lr=1.0, optimizer="sgd", lr_linear_decay=True),
}
ALGORITHMS = tuple(RECIPES)


@dataclass(frozen=True)
class LearnerSpec:
    """Everything that rebuilds a learner except its weights; stored in the learner file as plain values.

    ``convnet``: the ``ConvNet`` arguments besides ``in_channels=channels`` and ``image_size``.
    ``settings``: the arguments of the MAML/Reptile wrapper (empty for ProtoNet).
    ``class_names``: the classes it was trained on; ``held_out_class_names``: those it was scored on.
    """

    algorithm: str
    image_size: int
    channels: int
    n_way: int
    k_shot: int
    convnet: dict[str, Any]
    settings: dict[str, Any]
    class_names: list[str]
    held_out_class_names: list[str]
    data_source: str
    steps: int
    seed: int


def build_model(spec: LearnerSpec) -> nn.Module:
    """The untrained learner ``spec`` describes: a ``ConvNet``, wrapped by MAML or Reptile where the recipe says."""
    recipe = RECIPES[spec.algorithm]
    net = ConvNet(in_channels=spec.channels, image_size=spec.image_size, **spec.convnet)
    return net if recipe.wrapper is None else recipe.wrapper(net, **spec.settings)


class Learner:
    """A meta-trained model that adapts to a new task from its support set.

    ``predict(episode)`` takes one episode (``support_x: [N*K, channels, image_size, image_size]``,
    ``support_y: [N*K]`` in ``0..N-1``, ``query_x: [N*Q, ...]``) on any device and returns query logits
    ``[N*Q, N]`` on the learner's device. ProtoNet learners take any ``N``; MAML and Reptile learners
    have an ``n_way`` head and take ``N = n_way`` only. ``read_images(paths)`` prepares image files as
    in training. ``held_out`` is the accuracy measured on the held-out classes after training (or None).
    """

    def __init__(self, model: nn.Module, spec: LearnerSpec, held_out: EvalResult | None = None):
        self.model, self.spec, self.held_out = model, spec, held_out

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict(self, episode: Episode) -> Tensor:
        """Adapt to ``episode``'s support set, then query logits ``[N*Q, N]`` (no gradient kept)."""
        shape = tuple(episode.support_x.shape[-3:])
        expected = (self.spec.channels, self.spec.image_size, self.spec.image_size)
        if shape != expected or episode.query_x.shape[-3:] != episode.support_x.shape[-3:]:
            raise ValueError(f"this learner reads images of shape {expected} (channels, height, width), got "
                             f"{shape}; prepare image files with learner.read_images(paths)")
        n_way = episode.n_way
        if RECIPES[self.spec.algorithm].head and n_way != self.spec.n_way:
            raise ValueError(f"this {self.spec.algorithm} learner has a {self.spec.n_way}-way head, the episode has "
                             f"{n_way} classes; ProtoNet learners take any number of classes")
        with eval_mode(self.model):
            return RECIPES[self.spec.algorithm].predict(self.model, episode.to(self.device))

    def read_images(self, paths: Sequence[str | os.PathLike]) -> Tensor:
        """Image files as ``[len(paths), channels, image_size, image_size]`` floats in [0, 1], as in training."""
        return torch.stack([read_image(path, self.spec.image_size, self.spec.channels) for path in paths]).float() / 255

    def save(self, path: str | os.PathLike) -> None:
        """Write the learner to one file, atomically (a crash mid-write leaves no half file)."""
        held_out = None if self.held_out is None else {"metric": self.held_out.metric, "values": self.held_out.values}
        save_atomically({"format": FILE_FORMAT, "spec": asdict(self.spec), "state_dict": self.model.state_dict(),
                         "held_out": held_out}, Path(path))

    def __repr__(self) -> str:
        spec = self.spec
        scored = f"; held-out accuracy {self.held_out}" if self.held_out is not None else ""
        return (f"Learner({spec.algorithm}, {spec.n_way}-way {spec.k_shot}-shot, {spec.channels} x {spec.image_size}"
                f" x {spec.image_size} images, trained on {len(spec.class_names)} classes{scored})")


def load_learner(path: str | os.PathLike, device: torch.device | str | None = None) -> Learner:
    """The learner saved in ``path`` (by :meth:`Learner.save`), on ``device`` (default: ``runtime.get_device()``)."""
    path = Path(path)
    saved = read_torch_file(path, "learner file", "train it again with python -m course_lib train")
    if not isinstance(saved, dict) or saved.get("format") != FILE_FORMAT:
        raise ValueError(f"{describe_path(path)} is not a course_lib learner file (no {FILE_FORMAT!r} marker)")
    spec = LearnerSpec(**saved["spec"])
    model = build_model(spec)
    model.load_state_dict(saved["state_dict"])
    scores = saved["held_out"]
    held_out = None if scores is None else EvalResult(scores["metric"], scores["values"])
    return Learner(model.to(runtime.get_device(device)), spec, held_out)


def split_classes(dataset: ImageFolderDataset, val_fraction: float, n_way: int,
                  seed: int) -> tuple[ImageFolderDataset, ImageFolderDataset | None]:
    """``(training classes, held-out classes)``: ``round(val_fraction * classes)`` classes held out, chosen
    by ``seed``; with ``val_fraction=0`` every class trains and nothing is held out (None).

    Each part must have at least ``n_way`` classes, or ``ValueError`` says what to change.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be at least 0 and below 1, got {val_fraction}")
    n_classes = dataset.num_base_classes
    n_held_out = round(val_fraction * n_classes)
    if val_fraction > 0 and n_held_out < n_way:
        raise ValueError(f"val_fraction={val_fraction} holds out {n_held_out} of the {n_classes} classes, fewer than "
                         f"n_way={n_way} (a held-out episode needs n_way classes): raise val_fraction to at least "
                         f"{n_way / n_classes:.2f}, lower n_way, or add classes")
    if n_classes - n_held_out < n_way:
        raise ValueError(f"{n_classes - n_held_out} of the {n_classes} classes are left for training, fewer than "
                         f"n_way={n_way}: lower val_fraction or n_way, or add classes")
    order = torch.randperm(n_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    held_out, kept = sorted(order[:n_held_out]), sorted(order[n_held_out:])
    return dataset.select_classes(kept), dataset.select_classes(held_out) if held_out else None


@dataclass
class FolderRun:
    """A training run on an image folder, checked and ready: :func:`prepare_folder_run` builds it, :meth:`run` trains.

    Everything that can be wrong about the request (the folder, the sizes, the split) fails when it is
    built, before any training; ``python -m course_lib train`` reports those as usage errors.
    """

    spec: LearnerSpec
    train_sampler: EpisodeSampler
    held_out_episodes: list[Episode] | None
    meta_batch_size: int
    config: TrainConfig
    device: torch.device
    summary: list[str] = field(default_factory=list)  # what the run will do, in sentences for the user

    def run(self) -> Learner:
        """Meta-train, then score on the held-out episodes (``learner.held_out``)."""
        runtime.seed_everything(self.spec.seed)  # the initial weights too are the seed's
        model = build_model(self.spec).to(self.device)
        loss = RECIPES[self.spec.algorithm].loss
        train(model, loss, lambda g: self.train_sampler.sample_batch(self.meta_batch_size, g), self.config)
        learner = Learner(model, self.spec)
        if self.held_out_episodes is not None:
            learner.held_out = evaluate_episodes(learner.predict, self.held_out_episodes, device=self.device,
                                                 progress=self.config.progress, desc="held-out episodes")
        return learner


def prepare_folder_run(algorithm: str, data: str | os.PathLike, *, n_way: int = 5, k_shot: int = 1,
                       n_query: int = 5, steps: int = 1000, meta_batch_size: int | None = None,
                       lr: float | None = None, inner_lr: float | None = None, inner_steps: int | None = None,
                       image_size: int = 28, channels: int = 1, val_fraction: float = 0.2,
                       eval_episodes: int = 200, seed: int = 0, device: torch.device | str | None = None,
                       progress: bool = True) -> FolderRun:
    """Read the folder ``data``, split its classes and check every size; see the module docstring.

    ``meta_batch_size``, ``lr``, ``inner_lr`` and ``inner_steps`` default to the algorithm's recipe
    (:data:`RECIPES`); ``inner_lr``/``inner_steps`` apply to MAML and Reptile only. Raises
    ``ValueError`` (or ``FileNotFoundError`` for a missing folder) saying what to change.
    """
    if algorithm not in RECIPES:
        raise ValueError(f"unknown algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    recipe = RECIPES[algorithm]
    for name, value, least in [("steps", steps, 1), ("eval_episodes", eval_episodes, 2),
                               ("meta_batch_size", meta_batch_size, 1), ("inner_steps", inner_steps, 1),
                               ("image_size", image_size, MIN_IMAGE_SIZE)]:
        if value is not None and value < least:
            why = " (the conv net halves it 4 times)" if name == "image_size" else ""
            raise ValueError(f"{name} must be at least {least}{why}, got {value}")
    for name, value in [("lr", lr), ("inner_lr", inner_lr)]:
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if recipe.wrapper is None and (inner_lr is not None or inner_steps is not None):
        raise ValueError(f"{algorithm} has no inner loop: inner_lr and inner_steps are for maml and reptile")
    dataset = load_image_folder(data, image_size, channels)
    train_classes, held_out_classes = split_classes(dataset, val_fraction, n_way, seed)
    train_sampler = EpisodeSampler(train_classes, n_way, k_shot, n_query)
    held_out_episodes = None
    if held_out_classes is not None:
        held_out_sampler = EpisodeSampler(held_out_classes, n_way, k_shot, n_query)
        held_out_episodes = fixed_episodes(held_out_sampler, eval_episodes, seed=seed)
    overrides = {"inner_lr": inner_lr, "inner_steps": inner_steps}
    settings = {**recipe.settings, **{k: v for k, v in overrides.items() if v is not None}}
    spec = LearnerSpec(algorithm, image_size, channels, n_way, k_shot,
                       convnet={"n_classes": n_way if recipe.head else None}, settings=settings,
                       class_names=_class_names(train_classes), held_out_class_names=_class_names(held_out_classes),
                       data_source=dataset.source, steps=steps, seed=seed)
    config = TrainConfig(steps=steps, lr=recipe.lr if lr is None else lr, optimizer=recipe.optimizer,
                         lr_linear_decay=recipe.lr_linear_decay, seed=seed, progress=progress,
                         desc=f"{algorithm} meta-training")
    held = (f"holding out {len(spec.held_out_class_names)} classes for {eval_episodes} test episodes"
            if held_out_episodes else "holding out no classes (val_fraction=0): no held-out score")
    summary = [f"data: {dataset.source}",
               f"{algorithm}: {n_way}-way {k_shot}-shot episodes ({n_query} queries per class) of "
               f"{len(spec.class_names)} training classes, {steps} steps; {held}"]
    return FolderRun(spec, train_sampler, held_out_episodes, meta_batch_size or recipe.meta_batch_size, config,
                     runtime.get_device(device), summary)


def _class_names(dataset: ImageFolderDataset | None) -> list[str]:
    return [] if dataset is None else [dataset.class_name(c) for c in range(dataset.num_classes)]


def train_on_folder(algorithm: str, data: str | os.PathLike, save: str | os.PathLike | None = None,
                    **options) -> Learner:
    """Meta-train ``algorithm`` on the image folder ``data`` and return the :class:`Learner`; with ``save``,
    also write it there. ``options``: those of :func:`prepare_folder_run`.

    ``learner.held_out`` is the accuracy on the held-out classes, e.g. ``72.4% ± 1.9% (95% CI, 200 episodes)``.
    """
    learner = prepare_folder_run(algorithm, data, **options).run()
    if save is not None:
        learner.save(save)
    return learner
