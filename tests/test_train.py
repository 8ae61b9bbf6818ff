import numpy as np
import pytest
import torch
from torch import nn

from course_lib.train import NonFiniteLossError, TrainConfig, load_checkpoint, train


def regression_batch(generator):
    """A learnable toy problem: y = 3x - 1 with noise."""
    x = torch.randn(32, 1, generator=generator)
    return x, 3 * x - 1 + 0.01 * torch.randn(32, 1, generator=generator)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, 16), nn.Dropout(0.1), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def mse_loss(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def config(**kwargs):
    defaults = dict(steps=40, lr=1e-2, log_every=5, progress=False, seed=3)
    return TrainConfig(**{**defaults, **kwargs})


def test_loss_falls_and_history_is_complete():
    torch.manual_seed(0)
    model = Toy()
    history = train(model, mse_loss, regression_batch, config(steps=200, eval_every=50),
                    validate=lambda m: {"score": 1.0})
    steps, losses = history.series("loss")
    assert steps[-1] == 200 and losses[-1] < 0.1 * losses[0]
    assert history.series("val_score")[0] == [50, 100, 150, 200]
    assert {"lr", "time_s", "peak_memory_mb"} <= set(history.rows[-1])


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    # The schedule, dropout (global RNG) and batch sampling (the loop's generator) must all resume.
    cfg = dict(lr_step_size=10, lr_gamma=0.5, checkpoint_every=10, eval_every=10)
    validate = lambda m: {"score": np.float64(0.5)}  # noqa: E731  numpy scalars must checkpoint too
    torch.manual_seed(0)
    uninterrupted = Toy()
    train(uninterrupted, mse_loss, regression_batch, config(**cfg), validate)

    path = tmp_path / "run" / "ckpt.pt"
    torch.manual_seed(0)
    first = Toy()
    train(first, mse_loss, regression_batch, config(steps=20, **cfg, checkpoint_path=path), validate)
    assert load_checkpoint(path)["step"] == 20
    torch.manual_seed(99)  # a new session: different global state, fresh weights
    resumed = Toy()
    history = train(resumed, mse_loss, regression_batch, config(**cfg, checkpoint_path=path), validate)
    for a, b in zip(uninterrupted.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert history.series("loss")[0] == list(range(5, 45, 5))
    assert not list(path.parent.glob("*.tmp")), "checkpoints are written atomically"


def test_nan_guard_stops_with_a_clear_message():
    def exploding(model, batch):
        return mse_loss(model, batch) * float("nan")
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 1"):
        train(Toy(), exploding, regression_batch, config())


def test_mixed_precision_path_trains_on_cpu():
    torch.manual_seed(0)
    history = train(Toy(), mse_loss, regression_batch, config(steps=100, amp=True, grad_clip=1.0))
    losses = history.series("loss")[1]
    assert losses[-1] < 0.5 * losses[0]


def test_unknown_optimizer_is_an_error():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        train(Toy(), mse_loss, regression_batch, config(optimizer="lamb"))


def test_time_budget_stops_early_and_still_validates():
    history = train(Toy(), mse_loss, regression_batch, config(steps=10**6, max_seconds=0.5),
                    validate=lambda m: {"score": 1.0})
    steps, _ = history.series("val_score")
    assert len(steps) == 1 and steps[0] == history.rows[-1]["step"] < 10**6
    assert 0.5 <= history.last("time_s") < 5


def test_linear_decay_reaches_zero_and_excludes_step_decay():
    history = train(Toy(), mse_loss, regression_batch, config(lr_linear_decay=True))
    steps, lrs = history.series("lr")
    assert lrs == pytest.approx([1e-2 * (1 - s / 40) for s in steps]) and lrs[-1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="choose one learning-rate schedule"):
        train(Toy(), mse_loss, regression_batch, config(lr_linear_decay=True, lr_step_size=10))
