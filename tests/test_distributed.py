"""Meta-batches across processes: 2 processes over gloo on the CPU take the single-process steps."""
import importlib
import os
import shutil
import socket
from functools import partial

import pytest
import torch
import torch.multiprocessing as mp
from torch.nn import functional as F

from course_lib import distributed
from course_lib.data.batches import Episode
from course_lib.data.sinusoid import SinusoidTasks
from course_lib.meta.maml import MAML
from course_lib.models import MLP
from course_lib.train import TrainConfig, load_checkpoint, train

train_module = importlib.import_module("course_lib.train")   # the module: course_lib.train is the function
META_BATCH = 4
STEPS = 4


class Interrupted(Exception):
    """Stands in for a killed run."""


def sample_batch(generator, stop_at=None, calls=None):
    """Sinusoid MAML tasks in float64; with ``stop_at``, the run is interrupted when drawing that step's batch."""
    if calls is not None:
        calls.append(1)
        if len(calls) == stop_at:
            raise Interrupted
    batch = SinusoidTasks(k_shot=5, n_query=5).sample_batch(META_BATCH, generator)
    return Episode(*(t.double() for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y,
                                          batch.task)))


def new_maml(seed):
    torch.manual_seed(seed)
    return MAML(MLP().double(), inner_lr=0.01, inner_steps=2, task_loss=F.mse_loss)  # second order


def recording_loss(seen):
    def loss_fn(maml, batch):
        seen.append(batch.task.clone())
        return maml.meta_loss(batch)
    return loss_fn


def config(**kwargs):
    # SGD: the step is the meta-gradient itself, so a sum instead of a mean over ranks would show (Adam hides it)
    return TrainConfig(**{**dict(steps=STEPS, lr=0.01, optimizer="sgd", log_every=1, progress=False, seed=5),
                          **kwargs})


def worker(rank, world_size, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))   # what torchrun sets: train() makes the gloo group itself
    torch.set_num_threads(1)
    saves = []
    real_save = train_module.save_atomically
    train_module.save_atomically = lambda state, path: (saves.append(int(state["step"])), real_save(state, path))

    seen = []
    maml = new_maml(seed=rank)   # rank 1 initialises differently: rank 0's weights must win
    history = train(maml, recording_loss(seen), sample_batch, config())

    path = f"{folder}/ckpt.pt"
    calls = []
    try:
        train(new_maml(seed=10 * rank), recording_loss([]), partial(sample_batch, stop_at=3, calls=calls),
              config(checkpoint_every=2, checkpoint_path=path))
    except Interrupted:   # while drawing step 3's batch, after the checkpoint of step 2
        if rank == 0:
            shutil.copy(path, f"{folder}/step2.pt")
    resumed = new_maml(seed=20 + rank)
    resumed_history = train(resumed, recording_loss([]), sample_batch, config(checkpoint_every=2, checkpoint_path=path))
    torch.save({"weights": maml.state_dict(), "rows": history.rows, "seen": seen, "saves": saves,
                "resumed": resumed.state_dict(), "resumed_rows": resumed_history.rows},
               f"{folder}/rank{rank}.pt")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    mp.spawn(worker, args=(2, free_port(), str(folder)), nprocs=2, join=True)
    return folder, [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def one_process_run():
    seen = []
    maml = new_maml(seed=0)
    history = train(maml, recording_loss(seen), sample_batch, config())
    return maml, history, seen


def close(a, b, tol=1e-10):
    return all(torch.allclose(a[k], b[k], rtol=0, atol=tol) for k in a)


def same_rows(a, b):
    """Row for row equal to 1e-10, apart from the wall-clock time and the memory."""
    def strip(rows):
        return [{k: v for k, v in row.items() if k not in ("time_s", "peak_memory_mb")} for row in rows]
    return strip(a) == [pytest.approx(row, rel=1e-10) for row in strip(b)]


def test_each_rank_adapts_to_its_half_of_the_single_process_meta_batch(two_process_run, one_process_run):
    _, ranks = two_process_run
    _, _, seen = one_process_run
    for step in range(STEPS):
        assert [tuple(ranks[r]["seen"][step].shape) for r in range(2)] == [(2, 2), (2, 2)]
        assert torch.equal(torch.cat([ranks[0]["seen"][step], ranks[1]["seen"][step]]), seen[step])


def test_two_processes_take_the_single_process_second_order_maml_steps(two_process_run, one_process_run):
    _, ranks = two_process_run
    maml, history, _ = one_process_run
    single = maml.state_dict()
    assert not close(single, new_maml(seed=0).state_dict(), tol=1e-4), "the weights must have moved"
    for rank in ranks:
        assert close(rank["weights"], single), "the averaged meta-gradients give the single-process weights"
        assert same_rows(rank["rows"], history.rows), "the logged loss is the whole meta-batch's"


def test_rank_0_alone_writes_checkpoints_and_they_resume_exactly(two_process_run, one_process_run):
    folder, ranks = two_process_run
    maml, history, _ = one_process_run
    assert ranks[0]["saves"] == [2, 4] and ranks[1]["saves"] == []   # interrupted at step 3, then resumed
    assert load_checkpoint(folder / "ckpt.pt")["step"] == STEPS
    for rank in ranks:
        assert close(rank["resumed"], maml.state_dict())
        assert same_rows(rank["resumed_rows"], history.rows)


def test_a_two_process_checkpoint_resumes_in_one_process(two_process_run, one_process_run):
    folder, _ = two_process_run
    maml, history, _ = one_process_run
    checkpoint = load_checkpoint(folder / "step2.pt")
    assert checkpoint["step"] == 2 and len(checkpoint["rank_rng"]) == 2
    resumed = new_maml(seed=30)
    resumed_history = train(resumed, recording_loss([]), sample_batch, config(checkpoint_path=folder / "step2.pt"))
    assert close(resumed.state_dict(), maml.state_dict())
    assert same_rows(resumed_history.rows, history.rows)


def test_a_batch_is_split_into_contiguous_shares_weighted_by_size():
    batch = (torch.arange(5), {"y": torch.arange(5) * 10})
    shares = [distributed.share_of_batch(batch, distributed.Ranks(r, 2)) for r in range(2)]
    assert [s[0][0].tolist() for s in shares] == [[0, 1], [2, 3, 4]]
    assert [s[0][1]["y"].tolist() for s in shares] == [[0, 10], [20, 30, 40]]
    assert [s[1] for s in shares] == [0.4, 0.6]
    assert distributed.share_of_batch(batch, distributed.Ranks()) == (batch, 1.0)


def test_a_batch_too_small_or_without_a_task_dimension_is_refused():
    with pytest.raises(ValueError, match="3 tasks cannot be split over 4 processes"):
        distributed.share_of_batch(torch.zeros(3, 2), distributed.Ranks(0, 4))
    with pytest.raises(ValueError, match="do not share a leading task dimension"):
        distributed.share_of_batch((torch.zeros(4), torch.zeros(3)), distributed.Ranks(0, 2))


def test_the_command_line_trains_under_torchrun_like_one_process(tmp_path):
    """Rank 0 alone reports and saves, and the learner is the one-process learner (that the tasks are split
    and the gradients averaged is the business of the tests above)."""
    import subprocess
    import sys
    from pathlib import Path

    import course_lib
    from shapes import write_shapes_folder

    shapes = write_shapes_folder(tmp_path / "shapes")
    tiny = ["maml", "--data", str(shapes), "--n-way", "3", "--k-shot", "1", "--n-query", "2", "--steps", "2",
            "--meta-batch-size", "4", "--image-size", "16", "--val-fraction", "0.5", "--eval-episodes", "4",
            "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COURSE_PROGRESS": "0",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                           "-m", "course_lib", "train", *tiny, "--save", "learner.pt"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("held-out accuracy") == 1 and done.stdout.count("saved the learner") == 1, done.stdout
    learner = course_lib.load_learner(tmp_path / "learner.pt", device="cpu")
    alone = course_lib.train_on_folder(tiny[0], shapes, n_way=3, k_shot=1, n_query=2, steps=2, meta_batch_size=4,
                                       image_size=16, val_fraction=0.5, eval_episodes=4, device="cpu", progress=False)
    # The predictions, not the weights: a conv bias before batch norm has a zero gradient up to rounding, which
    # Adam turns into steps of either sign; batch norm removes that bias, so the predictions cannot depend on it.
    episodes = course_lib.fixed_episodes(course_lib.EpisodeSampler(
        course_lib.load_image_folder(shapes, image_size=16), 3, 1, 2), 4, seed=3)
    assert all(torch.allclose(learner.predict(e), alone.predict(e), atol=1e-4) for e in episodes)
    untrained = course_lib.Learner(course_lib.recipes.build_model(learner.spec), learner.spec)
    assert not all(torch.allclose(untrained.predict(e), alone.predict(e), atol=1e-4) for e in episodes)
