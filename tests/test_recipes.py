"""Ready-made training on an image folder: held-out classes, one learner file, a load that predicts the same."""
import pytest
import torch

from course_lib.data.episodes import EpisodeSampler, fixed_episodes
from course_lib.data.folder import load_image_folder
from course_lib.data.sources import CorruptFileError
from course_lib.evaluate import evaluate_episodes
from course_lib.recipes import FILE_FORMAT, load_learner, prepare_folder_run, split_classes, train_on_folder
from shapes import SHAPES, write_shapes_folder

TINY = dict(n_way=3, k_shot=1, n_query=2, steps=3, image_size=16, val_fraction=0.5, eval_episodes=6, seed=0,
            device="cpu", progress=False)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_folder(tmp_path_factory.mktemp("data") / "shapes")


def classes_named(shapes, names, image_size=16, channels=1):
    """The classes ``names`` of the shapes folder, read afresh."""
    dataset = load_image_folder(shapes, image_size, channels)
    every = [dataset.class_name(c) for c in range(dataset.num_classes)]
    return dataset.select_classes([every.index(name) for name in names])


def held_out_episodes(learner, shapes, n=2, seed=5):
    held_out = classes_named(shapes, learner.spec.held_out_class_names, learner.spec.image_size, learner.spec.channels)
    return fixed_episodes(EpisodeSampler(held_out, learner.spec.n_way, 1, 2), n, seed=seed)


@pytest.mark.parametrize("algorithm, options", [
    ("protonet", {}),
    ("protonet", {"channels": 3, "image_size": 20}),
    ("maml", {"inner_steps": 1}),
    ("reptile", {"inner_steps": 1, "steps": 2, "eval_episodes": 2}),
])
def test_a_saved_learner_loads_and_predicts_exactly_as_the_trained_one(shapes, tmp_path, algorithm, options):
    path = tmp_path / "out" / f"{algorithm}.pt"
    learner = train_on_folder(algorithm, shapes, save=path, **{**TINY, **options})

    saved = torch.load(path, weights_only=True)                          # plain values and tensors only
    assert saved["format"] == FILE_FORMAT and saved["spec"]["algorithm"] == algorithm
    spec = {**TINY, **options}
    assert (saved["spec"]["image_size"], saved["spec"]["channels"], saved["spec"]["n_way"]) == (
        spec["image_size"], spec.get("channels", 1), 3)
    assert not list(path.parent.glob(".*.part")), "written atomically: no temporary file is left"
    loaded = load_learner(path, device="cpu")
    assert loaded.spec == learner.spec
    assert sorted(loaded.spec.class_names + loaded.spec.held_out_class_names) == sorted(SHAPES)
    assert not set(loaded.spec.class_names) & set(loaded.spec.held_out_class_names), "held out = never trained on"
    assert torch.equal(loaded.held_out.values, learner.held_out.values)
    episodes = held_out_episodes(learner, shapes)
    trained_logits = [learner.predict(episode) for episode in episodes]
    assert all(torch.equal(loaded.predict(e), logits) for e, logits in zip(episodes, trained_logits))
    expected = [(logits.argmax(-1) == e.query_y).float().mean().item() for e, logits in zip(episodes, trained_logits)]
    assert evaluate_episodes(loaded.predict, episodes).values.tolist() == expected


def test_the_seed_decides_the_split_and_the_weights(shapes):
    first, again = (train_on_folder("protonet", shapes, **TINY) for _ in range(2))
    other = train_on_folder("protonet", shapes, **{**TINY, "seed": 1})
    assert first.spec.held_out_class_names == again.spec.held_out_class_names
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                  again.model.state_dict().values()))
    assert first.spec.held_out_class_names != other.spec.held_out_class_names


def test_the_held_out_score_is_the_evaluation_protocol_on_held_out_classes(shapes):
    run = prepare_folder_run("protonet", shapes, **TINY)
    assert len(run.held_out_episodes) == 6
    held_out = classes_named(shapes, run.spec.held_out_class_names).images.float() / 255   # [n, 1, 16, 16]
    trained = classes_named(shapes, run.spec.class_names).images.float() / 255
    for episode in run.held_out_episodes:
        for image in torch.cat([episode.support_x, episode.query_x]):
            assert (held_out == image).flatten(1).all(1).any(), "every episode image is from a held-out class"
            assert not (trained == image).flatten(1).all(1).any()
    learner = run.run()
    expected = evaluate_episodes(learner.predict, run.held_out_episodes)
    assert torch.equal(learner.held_out.values, expected.values) and "95% CI, 6 episodes" in str(learner.held_out)


def test_no_held_out_classes_with_val_fraction_zero(shapes):
    run = prepare_folder_run("protonet", shapes, **{**TINY, "val_fraction": 0.0, "steps": 1})
    assert run.held_out_episodes is None and "no held-out score" in run.summary[-1]
    learner = run.run()
    assert learner.held_out is None and sorted(learner.spec.class_names) == sorted(SHAPES)


def test_a_learner_reads_image_files_and_refuses_what_it_cannot_predict(shapes, tmp_path):
    maml = train_on_folder("maml", shapes, **{**TINY, "steps": 1})
    images = maml.read_images(sorted((shapes / "ring").iterdir())[:2])
    assert images.shape == (2, 1, 16, 16) and 0 <= images.min() and images.max() <= 1
    episode = held_out_episodes(maml, shapes)[0]
    two_way = type(episode)(episode.support_x[:2], episode.support_y[:2], episode.query_x, episode.query_y,
                            episode.task[:2])
    with pytest.raises(ValueError, match="3-way head, the episode has 2 classes"):
        maml.predict(two_way)
    big = type(episode)(torch.zeros(3, 1, 28, 28), episode.support_y, torch.zeros(6, 1, 28, 28), episode.query_y,
                        episode.task)
    with pytest.raises(ValueError, match=r"images of shape \(1, 16, 16\).*got \(1, 28, 28\)"):
        maml.predict(big)


def test_split_and_option_errors_say_what_to_change(shapes, tmp_path):
    dataset = load_image_folder(shapes, image_size=16)
    with pytest.raises(ValueError, match="holds out 1 of the 6 classes, fewer than n_way=3"):
        split_classes(dataset, 0.2, n_way=3, seed=0)
    with pytest.raises(ValueError, match="2 of the 6 classes are left for training, fewer than n_way=3"):
        split_classes(dataset, 0.7, n_way=3, seed=0)
    with pytest.raises(ValueError, match="smallest class, 'square', has only 5"):
        prepare_folder_run("protonet", shapes, **{**TINY, "val_fraction": 0.0, "k_shot": 3, "n_query": 3})
    with pytest.raises(ValueError, match="unknown algorithm 'snail': choose one of protonet, maml, reptile"):
        prepare_folder_run("snail", shapes)
    with pytest.raises(ValueError, match="protonet has no inner loop"):
        prepare_folder_run("protonet", shapes, inner_lr=0.1)
    with pytest.raises(ValueError, match="image_size must be at least 16"):
        prepare_folder_run("protonet", shapes, image_size=8)


def test_a_file_that_is_not_a_learner_is_refused_by_name(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not a course_lib learner file"):
        load_learner(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes(b"\x80\x02 truncated")
    with pytest.raises(CorruptFileError, match="learner file .*cut.pt cannot be read"):
        load_learner(tmp_path / "cut.pt")
