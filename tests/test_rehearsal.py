"""The full-profile rehearsal: every notebook's full code path and shapes, a few steps, in CI.

``python -m course_lib run --rehearse`` sets ``COURSE_REHEARSE=1`` for each kernel; the one switch,
``runtime.rehearsing()``, cuts the training loop to ``REHEARSAL_STEPS`` steps and the evaluation protocol to
``REHEARSAL_EPISODES`` episodes, skips the floors, and swaps a hub model that is not here for an offline one.
"""
import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from transformers import GPT2LMHeadModel

from course_lib import runtime
from course_lib.__main__ import main
from course_lib.course import report
from course_lib.course.cost import median_seconds
from course_lib.course.runner import NOTEBOOKS, REPO, run_course, select_notebooks
from course_lib.data.episodes import EpisodeSampler, fixed_episodes
from course_lib.data.sinusoid import SinusoidTasks
from course_lib.data.base import ClassDataset
from course_lib.evaluate import EvalResult, evaluate_episodes
from course_lib.models import MLP
from course_lib.text.causal_lm import load_causal_lm
from course_lib.train import TrainConfig, load_checkpoint, train


@pytest.fixture
def rehearsing(monkeypatch):
    monkeypatch.setenv("COURSE_REHEARSE", "1")
    monkeypatch.delenv("COURSE_PROFILE", raising=False)


def test_the_rehearsal_is_the_full_profile_and_a_bad_switch_is_a_clear_error(monkeypatch, rehearsing):
    profile = runtime.get_profile()
    assert (profile.name, profile.rehearse, profile.pick(quick=1, full=2)) == ("full", True, 2)
    assert "rehearsal" in runtime.describe(torch.device("cpu"), profile)
    with pytest.raises(ValueError, match="COURSE_REHEARSE=1 rehearses the full profile, not 'quick'"):
        runtime.get_profile("quick")
    monkeypatch.setenv("COURSE_REHEARSE", "yes")
    with pytest.raises(ValueError, match="COURSE_REHEARSE='yes': set it to 1"):
        runtime.rehearsing()
    monkeypatch.setenv("COURSE_REHEARSE", "0")
    assert not runtime.get_profile().rehearse and "rehearsal" not in runtime.describe(torch.device("cpu"),
                                                                                       runtime.get_profile())


def sine_run(tmp_path, steps):
    sinusoids = SinusoidTasks(k_shot=5, n_query=5)
    validated = []

    def loss(model, batch):
        return F.mse_loss(model(batch.support_x), batch.support_y)

    def validate(model):
        validated.append(True)
        return {"score": 1.0}

    config = TrainConfig(steps=steps, eval_every=500, checkpoint_every=500, checkpoint_path=tmp_path / "run.pt",
                         progress=False)
    history = train(MLP(), loss, lambda g: sinusoids.sample_batch(2, g), config, validate=validate)
    return history, validated


def test_a_rehearsal_stops_training_after_a_few_steps_and_validates_and_checkpoints_there(tmp_path, rehearsing):
    history, validated = sine_run(tmp_path, steps=60_000)
    last = history.rows[-1]
    assert last["step"] == runtime.REHEARSAL_STEPS and "loss" in last and "val_score" in last
    assert len(validated) == 1
    assert load_checkpoint(tmp_path / "run.pt")["step"] == runtime.REHEARSAL_STEPS


def test_without_the_rehearsal_every_step_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_REHEARSE", raising=False)
    history, _ = sine_run(tmp_path, steps=runtime.REHEARSAL_STEPS + 2)
    assert history.rows[-1]["step"] == runtime.REHEARSAL_STEPS + 2


def test_a_rehearsal_evaluates_on_the_first_few_episodes_and_times_one_call(monkeypatch):
    features = ClassDataset(torch.randn(10, 6, 8, generator=torch.Generator().manual_seed(0)),
                            [f"class {c}" for c in range(10)], "random features")
    sampler = EpisodeSampler(features, 5, 1, n_query=2)
    monkeypatch.delenv("COURSE_REHEARSE", raising=False)
    everything = fixed_episodes(sampler, 10, seed=0)
    monkeypatch.setenv("COURSE_REHEARSE", "1")
    few = fixed_episodes(sampler, 10, seed=0)
    assert len(everything) == 10 and len(few) == runtime.REHEARSAL_EPISODES
    assert all(torch.equal(a.query_x, b.query_x) for a, b in zip(few, everything))
    assert len(evaluate_episodes(lambda e: e.query_y, few).values) == runtime.REHEARSAL_EPISODES
    calls = []
    median_seconds(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == runtime.REHEARSAL_REPEATS
    assert runtime.rehearsal_cap(1, 5) == 1, "a count below the cap stays"


def test_floors_and_learned_results_are_asserted_except_in_a_rehearsal(monkeypatch, capsys):
    below = EvalResult("accuracy", torch.tensor([0.2, 0.3]))
    monkeypatch.delenv("COURSE_REHEARSE", raising=False)
    with pytest.raises(AssertionError, match="below its floor of 90%"):
        report.assert_floor("method", below, real=0.9, standin=0.9, real_data=True)
    with pytest.raises(AssertionError, match="should learn"):
        report.assert_result(False, "the model should learn")
    report.assert_result(True, "the model should learn")
    monkeypatch.setenv("COURSE_REHEARSE", "1")
    capsys.readouterr()
    report.assert_floor("method", below, real=0.9, standin=0.9, real_data=True)
    report.assert_result(False, "the model should learn")
    printed = capsys.readouterr().out
    assert "FAILS" in printed and printed.count("not asserted in a rehearsal") == 2 and "should learn" in printed


def test_a_rehearsal_replaces_a_hub_model_that_is_not_here_by_the_offline_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_REHEARSE", "1")
    model, tokenizer = load_causal_lm(tmp_path / "no-such-model")
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "no-such-model" in printed[0] and "small_causal_lm" in printed[0]
    assert isinstance(model, GPT2LMHeadModel) and model.config.vocab_size == tokenizer.vocab_size == 30_522
    ids = tokenizer("what is my balance")["input_ids"]
    assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids) == "what is my balance"


def test_a_rehearsal_of_the_quick_profile_or_over_the_stored_notebooks_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("COURSE_REHEARSE", raising=False)
    with pytest.raises(SystemExit) as usage:
        main(["run", "--profile", "quick", "--rehearse", "--out", str(tmp_path)])
    assert usage.value.code == 2 and "rehearses the full profile" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="over the stored ones"):
        run_course(rehearse=True, out_dir=NOTEBOOKS.parent, folder=NOTEBOOKS)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*")) if p.is_file()}


# Every notebook: 00-07 and 09 rehearse in about 100 s together on 2 idle cores; 08 cuts its regression test sets
# (drawn by ``sample_batch``, not ``fixed_episodes``) with ``runtime.rehearsal_cap`` too, and rehearses in about 30 s
# (26 s of CPU; 57 s wall on busy cores).
REHEARSED_IN_CI = ["00", "01", "02", "03", "04", "05", "06", "07", "08", "09"]


@pytest.mark.timeout(900)
def test_the_full_profile_path_runs_in_a_rehearsal(tmp_path, monkeypatch):
    """The rehearsal through the runner, as ``python -m course_lib run --rehearse --notebooks ...``: each passes,
    the stored notebooks and the course's checkpoint folder are left as they were."""
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.delenv("COURSE_CHECKPOINTS", raising=False)
    stored, checkpoints = digests(NOTEBOOKS), digests(REPO / "checkpoints")
    out = tmp_path / "rehearsal"

    status = run_course(selection=REHEARSED_IN_CI, rehearse=True, out_dir=out, timeout=600)

    result = json.loads((out / "report.json").read_text())
    failed = {r["notebook"]: r["error"] for r in result["notebooks"] if r["status"] != "passed"}
    assert status == 0 and not failed, f"full-profile paths that broke: {failed}"
    assert (result["profile"], result["rehearsal"]) == ("full", True)
    assert [r["notebook"] for r in result["notebooks"]] == [p.stem for p in select_notebooks(REHEARSED_IN_CI)]
    assert digests(NOTEBOOKS) == stored and digests(REPO / "checkpoints") == checkpoints
    executed = json.loads((out / "notebooks" / "03_maml.ipynb").read_text())
    printed = "".join(text for cell in executed["cells"] if cell["cell_type"] == "code"
                      for output in cell["outputs"] for text in output.get("text", ""))
    assert "profile: full (rehearsal" in printed
    assert f"{runtime.REHEARSAL_EPISODES} episodes)" in printed, "the evaluation scored a few episodes"
