"""course_lib: the tested training core of the open meta-learning course.

Use it outside the notebooks: ProtoNet on Omniglot, 5-way 1-shot, in a few lines (the offline
stand-in is used, and announced, where the real data is not available)::

    from functools import partial
    from course_lib import (ConvNet, EpisodeSampler, TrainConfig, evaluate_episodes, fixed_episodes,
                            load_omniglot, protonet, train)

    sampler = EpisodeSampler(load_omniglot("train"), n_way=5, k_shot=1, n_query=5)
    model = ConvNet()                                   # no head: the 64-d embedding of ProtoNet
    train(model, protonet.loss, lambda g: sampler.sample_batch(1, g), TrainConfig(steps=100))
    episodes = fixed_episodes(EpisodeSampler(load_omniglot("test"), 5, 1, 5), num_episodes=100)
    print(evaluate_episodes(partial(protonet.predict, model), episodes))   # mean ± 95% CI

MAML and Reptile are modules that hold the network: ``maml = MAML(ConvNet(n_classes=5))``, then
``train(maml, MAML.meta_loss, ...)`` and ``evaluate_episodes(maml.predict, episodes)``.

On your own images, one sub-folder per class::

    python -m course_lib train protonet --data my_images/ --save learner.pt

    learner = course_lib.load_learner("learner.pt")      # or course_lib.train_on_folder(...) in Python
    logits = learner.predict(episode)                     # [N*Q, N] for one Episode

Modules, each one idea (the notebook that introduces it in brackets):
    runtime   device, seeds, profiles, mixed precision       (00_orientation)
    data      datasets, episodes, sinusoid tasks, stand-ins, your image folders  (01_few_shot_problem)
    models    the 4-block conv net and the sinusoid MLP      (01, 03)
    meta      MAML, Reptile, ProtoNet, Proto-MAML, transfer baselines, in-context learners  (02-09)
    train     the one meta-training loop                     (01)
    evaluate  mean and 95% CI over fixed held-out episodes    (01)
    recipes   ready-made training on an image folder, and load_learner
    text      encoders, LoRA, prompts, causal LMs (imports transformers: not imported here)
    course    the course tooling: runner, grading, exercises, report, plots
"""
from .data.base import ClassDataset
from .data.batches import Episode
from .data.episodes import EpisodeSampler, MixtureSampler, fixed_episodes
from .data.folder import load_image_folder
from .data.omniglot import load_omniglot
from .data.sinusoid import SinusoidTasks
from .evaluate import EvalResult, evaluate_episodes, mean_confidence_interval
from .meta import protonet
from .meta.maml import MAML
from .meta.maml_plus_plus import MAMLPlusPlus
from .meta.proto_maml import ProtoMAML
from .meta.reptile import Reptile
from .models import MLP, ConvNet
from .recipes import Learner, load_learner, train_on_folder
from .runtime import get_device, get_profile, seed_everything
from .train import History, TrainConfig, train

__version__ = "0.1.0"

__all__ = [
    "ClassDataset", "Episode", "EpisodeSampler", "MixtureSampler", "fixed_episodes", "load_image_folder",
    "load_omniglot", "SinusoidTasks",
    "ConvNet", "MLP",
    "MAML", "MAMLPlusPlus", "ProtoMAML", "Reptile", "protonet",
    "train", "TrainConfig", "History",
    "evaluate_episodes", "EvalResult", "mean_confidence_interval",
    "train_on_folder", "load_learner", "Learner",
    "get_device", "get_profile", "seed_everything",
]
