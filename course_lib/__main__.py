"""Command line of the course.

    python -m course_lib run [--profile quick|full] [--rehearse] [--notebooks 00 01 ...] [--out DIR] [--timeout SECONDS]
    python -m course_lib seeds [--seeds 0 1 2] [--notebooks 02 03 04 05 06] [--out DIR] [--timeout SECONDS]
    python -m course_lib exercises [--check]
    python -m course_lib grade SUBMISSIONS... [--out DIR] [--resume] [-j N] [--timeout SECONDS] [--budget SECONDS]
                               [--memory-gb GB] [--sandbox process|namespace] [--hidden DIR] [--solutions DIR]
    python -m course_lib train {protonet,maml,reptile} --data DIR --save FILE [--n-way 5 --k-shot 1 ...]
    torchrun --nproc_per_node N -m course_lib train ...   # the meta-batch split over N processes (GPUs)

``train`` meta-trains on your own images (one sub-folder per class; see ``recipes``). Values that
cannot work (a timeout of 0, an unknown profile, 0 steps, a missing folder) are usage errors: exit
status 2 and one message saying what is allowed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch

from . import distributed, recipes
from .course.runner import REPO, run_course
from .data.sources import describe_path
from .runtime import PROFILES, get_device
from .train import NonFiniteLossError


def number_such_that(kind: type, accepted: Callable[[float], bool], requirement: str):
    """An argparse type: a number of ``kind`` (int or float) that ``accepted`` lets through, else a message
    saying the ``requirement``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {'whole ' if kind is int else ''}number, got {text!r}") from None
        if not accepted(value):
            raise argparse.ArgumentTypeError(f"{requirement}, got {text}")
        return value
    return parse


def whole_number_at_least(least: int):
    return number_such_that(int, lambda value: value >= least, f"must be at least {least}")


positive_number = number_such_that(float, lambda value: value > 0, "must be positive")
held_out_fraction = number_such_that(float, lambda value: 0 <= value < 1,
                                     "must be at least 0 and below 1 (the fraction of classes held out)")


def existing_folder(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder (expected one sub-folder of images per class)")
    return path


def existing_path(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return path


def device_name(text: str) -> str:
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: choose cpu, cuda, cuda:N or mps") from None
    try:
        get_device(text)
    except RuntimeError as error:  # a device this machine does not have
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parser, and its ``train`` sub-parser (which reports the data's problems as usage errors)."""
    parser = argparse.ArgumentParser(prog="python -m course_lib", description="The meta-learning course.")
    commands = parser.add_subparsers(dest="command", required=True)
    seconds = whole_number_at_least(1)

    run = commands.add_parser("run", help="execute the lecture notebooks in order and write a report")
    run.add_argument("--profile", choices=PROFILES, default=None,
                     help="quick (default; CPU, offline) or full (GPU, paper scale)")
    run.add_argument("--rehearse", action="store_true",
                     help="rehearse the full profile: its code path and shapes on the CPU, a few steps of each "
                          "training run and a few evaluation episodes, no floors asserted (what CI runs)")
    run.add_argument("--notebooks", nargs="+", metavar="NN", help="only notebooks whose names start with these")
    run.add_argument("--out", type=Path, help="run folder (default: runs/<time>-<profile>/)")
    run.add_argument("--timeout", type=seconds, default=1800, help="seconds allowed per cell (at least 1)")

    seeds = commands.add_parser("seeds", help="rerun notebooks with several training seeds: the spread between "
                                              "seeds and paired differences, on the same test episodes")
    seeds.add_argument("--seeds", nargs="+", type=whole_number_at_least(0), default=[0, 1, 2], metavar="SEED",
                       help="training seeds (default: 0 1 2)")
    seeds.add_argument("--notebooks", nargs="+", metavar="NN", default=["02", "03", "04", "05", "06"],
                       help="notebooks whose names start with these (default: 02 to 06, the cheap headline rows "
                            "and the equal-compute comparison)")
    seeds.add_argument("--out", type=Path, help="folder for one run per seed and seeds.md (default: runs/<time>-seeds/)")
    seeds.add_argument("--timeout", type=seconds, default=1800, help="seconds allowed per cell (at least 1)")

    exercises = commands.add_parser("exercises", help="generate exercises/ from solutions/")
    exercises.add_argument("--check", action="store_true", help="only report exercises that are out of date")

    grade = commands.add_parser("grade", help="grade students' exercise notebooks (a sandbox each)",
                                description="Grade submissions (notebooks, or class folders of them) against "
                                            "the solutions; each runs in its own sandboxed kernel and the grader "
                                            "checks the student's functions in its own process.")
    grade.add_argument("paths", nargs="+", type=Path, help="notebooks, or folders of notebooks")
    grade.add_argument("--solutions", type=Path, default=REPO / "solutions", help="the solutions folder")
    grade.add_argument("--out", type=Path, help="gradebook folder: grades.csv, results.jsonl, feedback/")
    grade.add_argument("--resume", action="store_true", help="keep --out's finished results, grade the rest")
    grade.add_argument("-j", "--jobs", type=whole_number_at_least(1), default=1, help="notebooks graded at once")
    grade.add_argument("--timeout", type=seconds, default=120,
                       help="seconds allowed per cell and per call of a student's function (at least 1)")
    grade.add_argument("--budget", type=seconds, default=900, help="seconds allowed per notebook (at least 1)")
    grade.add_argument("--memory-gb", type=positive_number, default=4, help="address space per kernel (GiB)")
    grade.add_argument("--sandbox", choices=("process", "namespace"), default="process",
                       help="process: scrubbed env, memory limit, private folder; namespace: also no network "
                            "and the course and submissions read-only (Linux user namespaces)")
    grade.add_argument("--hidden", type=existing_path, help="folder of hidden checks, one NN_name.py per set")

    train = commands.add_parser("train", help="meta-train on your own images (one sub-folder per class)",
                                description="Meta-train a few-shot learner on a folder of class folders, score it "
                                            "on held-out classes, save it for course_lib.load_learner.")
    train.add_argument("algorithm", choices=recipes.ALGORITHMS, help="the meta-learning algorithm")
    train.add_argument("--data", type=existing_folder, required=True, help="folder with one sub-folder per class")
    train.add_argument("--save", type=Path, required=True, help="file to write the trained learner to (.pt)")
    train.add_argument("--n-way", type=whole_number_at_least(2), default=5, help="classes per episode (default 5)")
    train.add_argument("--k-shot", type=whole_number_at_least(1), default=1, help="support images per class (1)")
    train.add_argument("--n-query", type=whole_number_at_least(1), default=5, help="query images per class (5)")
    train.add_argument("--steps", type=whole_number_at_least(1), default=1000, help="meta-training steps (1000)")
    train.add_argument("--meta-batch-size", type=whole_number_at_least(1),
                       help="episodes per step (default: protonet 1, maml 4, reptile 5)")
    train.add_argument("--lr", type=positive_number,
                       help="outer learning rate (default: 1e-3 with Adam; reptile 1.0 with SGD, annealed)")
    train.add_argument("--inner-lr", type=positive_number, help="maml/reptile inner step size (0.4 / 1e-3)")
    train.add_argument("--inner-steps", type=whole_number_at_least(1), help="maml/reptile inner steps (1 / 5)")
    train.add_argument("--image-size", type=whole_number_at_least(recipes.MIN_IMAGE_SIZE), default=28,
                       help=f"images are resized to this square side (default 28, at least {recipes.MIN_IMAGE_SIZE})")
    train.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 (grey, default) or 3 (RGB)")
    train.add_argument("--val-fraction", type=held_out_fraction, default=0.2,
                       help="fraction of the classes held out for the test episodes (default 0.2; 0: none)")
    train.add_argument("--eval-episodes", type=whole_number_at_least(2), default=200,
                       help="held-out episodes for the accuracy and its 95%% CI (default 200)")
    train.add_argument("--seed", type=int, default=0, help="seed of the class split, the episodes and the weights")
    train.add_argument("--device", type=device_name, help="cpu, cuda, cuda:N or mps (default: the best available)")
    return parser, train


def main(argv: list[str] | None = None) -> int:
    parser, train_parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.rehearse and args.profile == "quick":
            parser.error("--rehearse rehearses the full profile: leave out --profile quick")
        return run_course(args.profile, args.notebooks, args.out, args.timeout, rehearse=args.rehearse)
    if args.command == "seeds":
        from datetime import datetime

        from .course.seeds import run_seeds
        return run_seeds(args.seeds, args.notebooks, args.out or REPO / "runs" / f"{datetime.now():%Y%m%d-%H%M%S}-seeds",
                         args.timeout)
    if args.command == "exercises":
        from .course.exercises import generate_exercises, stale_exercises
        if args.check:
            problems = stale_exercises(REPO / "solutions", REPO / "exercises")
            print("\n".join(problems) if problems else "exercises are up to date")
            return 1 if problems else 0
        try:
            written = generate_exercises(REPO / "solutions", REPO / "exercises")
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for path in written:
            print(f"wrote {path.relative_to(REPO)}")
        return 0
    if args.command == "train":
        return train_command(args, train_parser)
    return grade_command(args, parser)


def grade_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``python -m course_lib grade``: 0 when every file was graded, 1 when some could not be (or it was stopped)."""
    from .course.classroom import grade_class
    from .course.grading import Sandbox

    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)}")
    if not args.solutions.is_dir():
        parser.error(f"--solutions {str(args.solutions)!r} is not a folder")
    read_only = [REPO, Path(sys.prefix), Path(sys.base_prefix), *([args.out] if args.out else []),
                 *(path.resolve() if path.is_dir() else path.resolve().parent for path in args.paths)]
    sandbox = Sandbox(args.sandbox, int(args.memory_gb * 2 ** 30), args.timeout, args.budget, read_only)
    try:
        result = grade_class(args.paths, args.solutions, args.out, sandbox=sandbox, jobs=args.jobs,
                             resume=args.resume, hidden_dir=args.hidden,
                             on_report=lambda report: print(report.format_table() + "\n", flush=True))
    except (ValueError, RuntimeError) as error:  # a solution that breaks the protocol, no namespaces here
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = {}
    for report in result.reports:
        counts[report.status] = counts.get(report.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to grade"
    print(("stopped: " if result.stopped else "") + summary + (f"; gradebook in {args.out}" if args.out else ""))
    return 0 if result.all_graded else 1


def train_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``python -m course_lib train``: check the request, meta-train, report the held-out accuracy, save."""
    if args.save.is_dir():
        parser.error(f"--save names the folder {str(args.save)!r}: give a file name, "
                     f"e.g. {str(args.save / 'learner.pt')!r}")
    try:
        run = recipes.prepare_folder_run(
            args.algorithm, args.data, n_way=args.n_way, k_shot=args.k_shot, n_query=args.n_query,
            steps=args.steps, meta_batch_size=args.meta_batch_size, lr=args.lr, inner_lr=args.inner_lr,
            inner_steps=args.inner_steps, image_size=args.image_size, channels=args.channels,
            val_fraction=args.val_fraction, eval_episodes=args.eval_episodes, seed=args.seed,
            device=get_device(args.device))
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    say = print if distributed.is_main_process() else lambda *_: None   # under torchrun: rank 0 speaks and saves
    say("\n".join(run.summary))
    try:
        learner = run.run()
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not distributed.is_main_process():
        return 0
    if learner.held_out is not None:
        print(f"held-out accuracy ({args.n_way}-way {args.k_shot}-shot, {len(learner.spec.held_out_class_names)} "
              f"classes never seen in training): {learner.held_out}")
    learner.save(args.save)
    print(f"saved the learner to {describe_path(args.save)}; load it with course_lib.load_learner(path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
