import importlib
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import runtime
from course_lib.data.sources import CorruptFileError
from course_lib.train import (CheckpointMismatchError, NonFiniteError, NonFiniteLossError, TrainConfig,
                              load_checkpoint, train)

train_module = importlib.import_module("course_lib.train")   # the module: course_lib.train is also the function


def regression_batch(generator):
    """A learnable toy problem: y = 3x - 1 with noise."""
    x = torch.randn(32, 1, generator=generator)
    return x, 3 * x - 1 + 0.01 * torch.randn(32, 1, generator=generator)


class Toy(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, width), nn.Dropout(0.1), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, x):
        return self.net(x)


def mse_loss(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def config(**kwargs):
    defaults = dict(steps=40, lr=1e-2, log_every=5, progress=False, seed=3)
    return TrainConfig(**{**defaults, **kwargs})


def validate_np(model):
    return {"score": np.float64(0.5)}  # numpy scalars must checkpoint too


def same_history(a, b):
    """Row for row equal, apart from the wall-clock time and the memory."""
    def strip(rows):
        return [{k: v for k, v in row.items() if k not in ("time_s", "peak_memory_mb")} for row in rows]
    return strip(a.rows) == strip(b.rows)


def test_loss_falls_and_history_is_complete():
    torch.manual_seed(0)
    model = Toy()
    history = train(model, mse_loss, regression_batch, config(steps=200, eval_every=50),
                    validate=lambda m: {"score": 1.0})
    steps, losses = history.series("loss")
    assert steps[-1] == 200 and losses[-1] < 0.1 * losses[0]
    assert history.series("val_score")[0] == [50, 100, 150, 200]
    assert {"lr", "time_s", "peak_memory_mb"} <= set(history.rows[-1])


# Checkpoints at 7, 14, 21, ...: a kill at step 24 resumes from step 21, in the middle of the logging
# window 21-25. The schedule, dropout (global RNG) and batch sampling (the loop's generator) must all resume.
RESUME = dict(lr_step_size=10, lr_gamma=0.5, log_every=5, eval_every=10, checkpoint_every=7)


def run_until_killed(path, kill_at):
    """Train with checkpoints at ``path`` until the process SIGKILLs itself when asked for batch ``kill_at``."""
    asked = 0

    def sample_batch(generator):
        nonlocal asked
        asked += 1
        if asked == kill_at:
            os.kill(os.getpid(), 9)
        return regression_batch(generator)
    torch.manual_seed(0)
    train(Toy(), mse_loss, sample_batch, config(**RESUME, checkpoint_path=path), validate_np)


def test_a_killed_run_resumes_exactly_like_an_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    uninterrupted = Toy()
    full_history = train(uninterrupted, mse_loss, regression_batch, config(**{**RESUME, "checkpoint_every": 0}),
                         validate_np)

    path = tmp_path / "run" / "ckpt.pt"
    child = ("import sys; sys.path.insert(0, sys.argv[1]); import test_train; "
             "test_train.run_until_killed(sys.argv[2], int(sys.argv[3]))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    killed = subprocess.run([sys.executable, "-c", child, str(Path(__file__).parent), str(path), "24"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    saved = load_checkpoint(path)
    assert saved["step"] == 21 and len(saved["window"]) == 1

    torch.manual_seed(99)  # a new session: different global state, fresh weights
    resumed = Toy()
    history = train(resumed, mse_loss, regression_batch, config(**RESUME, checkpoint_path=path), validate_np)
    for a, b in zip(uninterrupted.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert same_history(history, full_history)
    assert history.series("loss")[0] == list(range(5, 45, 5))
    assert list(path.parent.iterdir()) == [path], "checkpoints are written atomically, no temporary file left"


@pytest.fixture
def saved_run(tmp_path):
    """The config of a finished 10-step run whose checkpoint is ``tmp_path / "ckpt.pt"``."""
    cfg = config(steps=10, checkpoint_every=5, checkpoint_path=tmp_path / "ckpt.pt")
    torch.manual_seed(0)
    train(Toy(), mse_loss, regression_batch, cfg)
    return cfg


@pytest.mark.parametrize("change, difference", [
    (dict(lr=2e-2), "lr: 0.01 -> 0.02"),
    (dict(optimizer="sgd"), "optimizer: 'adam' -> 'sgd'"),
    (dict(steps=20), "steps: 10 -> 20"),
    (dict(lr_linear_decay=True), "lr_linear_decay: False -> True"),
    (dict(lr_step_size=4), "lr_step_size: None -> 4"),
])
def test_resume_with_another_config_is_refused(saved_run, change, difference):
    with pytest.raises(CheckpointMismatchError) as error:
        train(Toy(), mse_loss, regression_batch, replace(saved_run, **change))
    message = str(error.value)
    assert "ckpt.pt" in message and difference in message
    assert "delete the file or choose another checkpoint_path" in message


def test_resume_with_another_model_is_refused(saved_run):
    difference = "model net.0.weight: [16, 1] float32 -> [32, 1] float32"
    with pytest.raises(CheckpointMismatchError, match=re.escape(difference)):
        train(Toy(width=32), mse_loss, regression_batch, saved_run)


def test_resume_may_change_how_a_run_saves_stops_and_shows(saved_run):
    history = train(Toy(), mse_loss, regression_batch,
                    replace(saved_run, checkpoint_every=2, max_seconds=60, progress=True, desc="again"))
    assert history.series("loss")[0] == [5, 10]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_checkpoint_is_an_error_that_names_the_file(saved_run, damage):
    path = Path(saved_run.checkpoint_path)
    data = path.read_bytes()
    path.write_bytes(b"not a checkpoint" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"checkpoint .*ckpt\.pt.*delete it to start over"):
        train(Toy(), mse_loss, regression_batch, saved_run)


def test_nan_guard_stops_with_a_clear_message():
    def exploding(model, batch):
        return mse_loss(model, batch) * float("nan")
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 1"):
        train(Toy(), exploding, regression_batch, config())


def nan_gradient_at(step):
    """``mse_loss``, plus ``sqrt(|w - w|^2)`` at call ``step``: 0 is added to the loss, but its gradient is NaN."""
    calls = 0

    def loss_fn(model, batch):
        nonlocal calls
        calls += 1
        loss = mse_loss(model, batch)
        if calls == step:
            weight = model.net[0].weight
            loss = loss + (weight - weight.detach()).pow(2).sum().sqrt()
        return loss
    return loss_fn


def test_non_finite_gradients_stop_before_the_step_and_the_last_checkpoint_resumes(tmp_path):
    cfg = config(steps=8, checkpoint_every=1, checkpoint_path=tmp_path / "ckpt.pt")
    torch.manual_seed(0)
    model = Toy()
    with pytest.raises(NonFiniteError, match="gradients became non-finite at step 4"):
        train(model, nan_gradient_at(4), regression_batch, cfg)
    assert all(torch.isfinite(p).all() for p in model.parameters()), "the optimizer step was not taken"
    assert load_checkpoint(cfg.checkpoint_path)["step"] == 3

    torch.manual_seed(0)
    uninterrupted = Toy()
    train(uninterrupted, mse_loss, regression_batch, replace(cfg, checkpoint_every=0, checkpoint_path=None))
    resumed = Toy()
    train(resumed, mse_loss, regression_batch, cfg)
    for a, b in zip(uninterrupted.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_on_a_gpu_a_non_finite_step_is_skipped_on_the_device_and_stops_the_run_when_it_logs(monkeypatch):
    # On CUDA the checks stay on the device: the fused optimizer skips the flagged step 4 (Adam's step
    # count shows it: steps 1-3 and 5 taken), and the run stops at its next logged step, naming step 4.
    monkeypatch.setattr(train_module, "checks_on_device", lambda device: True)
    model = Toy()
    with pytest.raises(NonFiniteError, match="gradients became non-finite at step 4 .*the step was not taken"):
        train(model, nan_gradient_at(4), regression_batch, config(steps=10, log_every=5))
    assert all(torch.isfinite(p).all() for p in model.parameters())

    def exploding(model, batch):
        return mse_loss(model, batch) * float("nan")
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 1"):
        train(Toy(), exploding, regression_batch, config(steps=10, log_every=5))


def test_on_a_gpu_the_skipped_step_leaves_optimizer_and_weights_as_before(monkeypatch):
    monkeypatch.setattr(train_module, "checks_on_device", lambda device: True)
    optimizers = []
    real_make_optimizer = train_module.make_optimizer
    monkeypatch.setattr(train_module, "make_optimizer",
                        lambda *args, **kwargs: optimizers.append(real_make_optimizer(*args, **kwargs)) or optimizers[-1])
    torch.manual_seed(0)
    model = Toy()
    with pytest.raises(NonFiniteError, match="at step 4"):
        train(model, nan_gradient_at(4), regression_batch, config(steps=4, log_every=4))
    assert optimizers[0].defaults["fused"] is True
    assert {int(state["step"]) for state in optimizers[0].state.values()} == {3}, "step 4 was skipped"
    torch.manual_seed(0)
    three_steps = Toy()
    train(three_steps, mse_loss, regression_batch, config(steps=3, log_every=4))
    for a, b in zip(model.parameters(), three_steps.parameters()):
        assert torch.equal(a, b), "the weights are those of the three good steps"


def test_fp16_loss_scaling_skips_a_step_with_non_finite_gradients(monkeypatch):
    # The scaler unscales, finds the NaN and skips the step (and lowers its scale); without the skip the
    # NaN would reach the weights and the next loss would stop the run.
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    monkeypatch.setattr(runtime, "grad_scaler", lambda device, dtype: scaler)
    model = Toy()
    history = train(model, nan_gradient_at(4), regression_batch, config(steps=10))
    assert history.last("step") == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert scaler.get_scale() == 2.0**16 / 2, "one step skipped: the scale halved once"


def test_non_finite_weights_are_never_saved(tmp_path):
    calls = 0

    def loss_fn(model, batch):  # at step 4 the weights break after a finite loss and finite gradients
        nonlocal calls
        calls += 1
        loss = mse_loss(model, batch)
        if calls == 4:
            with torch.no_grad():
                model.net[3].bias.fill_(float("inf"))
        return loss
    cfg = config(steps=8, checkpoint_every=1, checkpoint_path=tmp_path / "ckpt.pt")
    with pytest.raises(NonFiniteError, match=r"weights became non-finite at step 4 .*ckpt\.pt keeps the last good"):
        train(Toy(), loss_fn, regression_batch, cfg)
    saved = load_checkpoint(cfg.checkpoint_path)
    assert saved["step"] == 3 and all(torch.isfinite(t).all() for t in saved["model"].values())


def test_validation_follows_eval_every_whatever_log_every_is():
    import matplotlib
    matplotlib.use("Agg")
    from course_lib.course.plots import plot_learning_curves, plot_validation

    history = train(Toy(), mse_loss, regression_batch, config(steps=7, log_every=3, eval_every=2),
                    validate=lambda m: {"score": 0.5, "score_ci95": 0.1})
    assert [row["step"] for row in history.rows] == [2, 3, 4, 6, 7]
    assert history.series("val_score")[0] == [2, 4, 6, 7]
    assert history.series("loss")[0] == [3, 6, 7]
    assert set(history.rows[0]) == {"step", "val_score", "val_score_ci95"}, "a validation-only row"
    assert list(plot_validation(history, "score").axes[0].lines[0].get_xdata()) == [2, 4, 6, 7]
    assert list(plot_learning_curves(history).axes[0].lines[0].get_xdata()) == [3, 6, 7]


def test_validation_runs_in_eval_mode_and_training_continues_in_train_mode():
    probe = torch.linspace(-1, 1, 64).unsqueeze(1)
    seen, modes = [], []

    def validate(model):
        first, second = model(probe), model(probe)
        seen.append((model.training, model.net[1].training, torch.equal(first, second)))
        return {"score": 0.0}

    def loss_fn(model, batch):
        modes.append(model.net[1].training)
        return mse_loss(model, batch)
    model = Toy()
    train(model, loss_fn, regression_batch, config(steps=6, eval_every=2), validate)
    assert seen == [(False, False, True)] * 3, "dropout off: the same predictions twice"
    assert modes == [True] * 6 and model.training


def test_mixed_precision_path_trains_on_cpu():
    torch.manual_seed(0)
    history = train(Toy(), mse_loss, regression_batch, config(steps=100, amp=True, grad_clip=1.0))
    losses = history.series("loss")[1]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("impossible, message", [
    (dict(steps=0), "steps=0: train for 1 step or more"),
    (dict(log_every=0), "log_every=0: log every 1 step or more"),
    (dict(eval_every=-1), "eval_every=-1: validate every 1 step or more, or 0 for only after the last step"),
    (dict(checkpoint_every=-5), "checkpoint_every=-5: save every 1 step or more, or 0 for never"),
    (dict(checkpoint_every=10), "checkpoint_every=10 needs a checkpoint_path to save to"),
    (dict(optimizer="lamb"), "unknown optimizer 'lamb': choose one of adam, adamw, sgd"),
    (dict(lr_step_size=0), "lr_step_size=0: decay every 1 step or more, or None for a constant rate"),
    (dict(lr_linear_decay=True, lr_step_size=10),
     "lr_step_size=10 and lr_linear_decay=True: choose one learning-rate schedule"),
    (dict(max_seconds=0), "max_seconds=0: give a positive time budget, or None for no limit"),
    (dict(grad_clip=-1.0), "grad_clip=-1.0: clip to a positive norm, or None for no clipping"),
])
def test_an_impossible_config_is_refused_when_it_is_built(impossible, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        config(**impossible)


def test_time_budget_stops_early_and_still_validates():
    history = train(Toy(), mse_loss, regression_batch, config(steps=10**6, max_seconds=0.5),
                    validate=lambda m: {"score": 1.0})
    steps, _ = history.series("val_score")
    assert len(steps) == 1 and steps[0] == history.rows[-1]["step"] < 10**6
    assert 0.5 <= history.last("time_s") < 5


def test_linear_decay_reaches_zero():
    history = train(Toy(), mse_loss, regression_batch, config(lr_linear_decay=True))
    steps, lrs = history.series("lr")
    assert lrs == pytest.approx([1e-2 * (1 - s / 40) for s in steps]) and lrs[-1] == pytest.approx(0.0)
