"""The command line: one-command training on a folder, the public API, and usage errors without tracebacks."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import course_lib
from course_lib.__main__ import main
from shapes import write_shapes_folder

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n-way", "3", "--k-shot", "1", "--n-query", "2", "--steps", "3", "--image-size", "16",
        "--val-fraction", "0.5", "--eval-episodes", "6", "--seed", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_folder(tmp_path_factory.mktemp("data") / "shapes")


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_on_a_folder_in_one_command_then_load_in_one_line(shapes, tmp_path, capsys):
    in_memory = course_lib.train_on_folder("protonet", shapes, n_way=3, k_shot=1, n_query=2, steps=3, image_size=16,
                                           val_fraction=0.5, eval_episodes=6, seed=0, device="cpu", progress=False)

    assert main(["train", "protonet", "--data", str(shapes), "--save", str(tmp_path / "learner.pt"), *TINY]) == 0

    out = capsys.readouterr().out
    assert "data: image folder" in out and "6 classes, 41 images (5 to 9 per class)" in out
    assert f"held-out accuracy (3-way 1-shot, 3 classes never seen in training): {in_memory.held_out}" in out
    assert "95% CI, 6 episodes" in out and str(tmp_path) not in out
    learner = course_lib.load_learner(tmp_path / "learner.pt", device="cpu")
    assert same_weights(learner.model.state_dict(), in_memory.model.state_dict()), "the CLI is the recipe"
    assert learner.spec == in_memory.spec
    episodes = course_lib.fixed_episodes(course_lib.EpisodeSampler(
        course_lib.load_image_folder(shapes, image_size=16), 3, 1, 2), 4, seed=3)
    assert all(torch.equal(learner.predict(e), in_memory.predict(e)) for e in episodes)
    assert torch.equal(course_lib.evaluate_episodes(learner.predict, episodes).values,
                       course_lib.evaluate_episodes(in_memory.predict, episodes).values)


def test_python_dash_m_course_lib_train(shapes, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "COURSE_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-m", "course_lib", "train", "protonet", "--data", str(shapes),
                           "--save", str(tmp_path / "learner.pt"), *TINY],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "held-out accuracy (3-way 1-shot" in done.stdout and "saved the learner to learner.pt;" in done.stdout
    learner = course_lib.load_learner(tmp_path / "learner.pt", device="cpu")
    in_process = course_lib.train_on_folder("protonet", shapes, n_way=3, k_shot=1, n_query=2, steps=3, image_size=16,
                                            val_fraction=0.5, eval_episodes=6, seed=0, device="cpu", progress=False)
    assert learner.spec == in_process.spec
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(learner.model.state_dict().values(),
                                                               in_process.model.state_dict().values()))


@pytest.mark.parametrize("argv, message", [
    (["run", "--timeout", "0"], "argument --timeout: must be at least 1, got 0"),
    (["run", "--timeout", "-3"], "argument --timeout: must be at least 1, got -3"),
    (["grade", "a.ipynb", "--timeout", "0"], "argument --timeout: must be at least 1, got 0"),
    (["run", "--timeout", "soon"], "argument --timeout: expected a whole number, got 'soon'"),
    (["run", "--profile", "bogus"], "argument --profile: invalid choice: 'bogus' (choose from 'quick', 'full')"),
    (["train", "snail", "--data", "{data}", "--save", "{save}"],
     "argument algorithm: invalid choice: 'snail' (choose from 'protonet', 'maml', 'reptile')"),
    (["train", "protonet", "--data", "{data}", "--save", "{save}", "--steps", "0"],
     "argument --steps: must be at least 1, got 0"),
    (["train", "protonet", "--data", "{missing}", "--save", "{save}"], "argument --data: "),
    (["train", "protonet", "--save", "{save}"], "the following arguments are required: --data"),
    (["train", "protonet", "--data", "{data}", "--save", "{save}", "--n-way", "1"],
     "argument --n-way: must be at least 2, got 1"),
    (["train", "protonet", "--data", "{data}", "--save", "{save}", "--val-fraction", "1"],
     "argument --val-fraction: must be at least 0 and below 1"),
    (["train", "protonet", "--data", "{data}", "--save", "{save}", "--lr", "0"], "argument --lr: must be positive"),
    (["train", "protonet", "--data", "{data}", "--save", "{save}", "--image-size", "8"],
     "argument --image-size: must be at least 16, got 8"),
    (["train", "protonet", "--data", "{data}", "--save", "{save}", "--channels", "2"],
     "argument --channels: invalid choice: 2 (choose from 1, 3)"),
    (["train", "protonet", "--data", "{data}", "--save", "{save}", "--device", "toaster"],
     "argument --device: unknown device 'toaster': choose cpu, cuda, cuda:N or mps"),
    (["train", "protonet", "--data", "{data}", "--save", "{data}"], "--save names the folder"),
    # problems of the data itself, found before training starts, are usage errors too
    (["train", "protonet", "--data", "{data}", "--save", "{save}", "--k-shot", "3", "--n-query", "3",
      "--val-fraction", "0"],
     "smallest class, 'square', has only 5"),
    (["train", "protonet", "--data", "{data}", "--save", "{save}", "--n-way", "4"],
     "holds out 1 of the 6 classes, fewer than n_way=4"),
    (["train", "protonet", "--data", "{data}", "--save", "{save}", "--inner-steps", "2"],
     "protonet has no inner loop"),
])
def test_impossible_values_are_usage_errors_that_say_what_is_allowed(shapes, tmp_path, capsys, argv, message):
    argv = [a.format(data=shapes, missing=tmp_path / "missing", save=tmp_path / "x.pt") for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert message in err and "usage: python -m course_lib" in err and "Traceback" not in err
    assert not (tmp_path / "x.pt").exists()


def test_every_public_name_imports_and_import_stays_light():
    for name in course_lib.__all__:
        assert getattr(course_lib, name) is not None, name
    assert callable(course_lib.train) and course_lib.train.__module__ == "course_lib.train", "the loop, not the module"
    code = ("import sys, time; t = time.perf_counter(); import course_lib; "
            "print(time.perf_counter() - t, 'transformers' in sys.modules, 'higher' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds, transformers, higher = done.stdout.split()
    assert (transformers, higher) == ("False", "False"), "the optional heavy pieces load only when asked for"
    assert float(seconds) < 30, f"import course_lib took {seconds} s"


def test_the_api_example_in_the_package_docstring_runs(capsys):
    example = course_lib.__doc__.split("::\n\n", 1)[1].split("\n\nMAML", 1)[0]
    code = textwrap.dedent(example)
    assert "train(model, protonet.loss" in code and "evaluate_episodes(" in code
    exec(code.replace("steps=100", "steps=2").replace("num_episodes=100", "num_episodes=2"), {})  # smaller, same code
    assert "(95% CI, 2 episodes)" in capsys.readouterr().out
