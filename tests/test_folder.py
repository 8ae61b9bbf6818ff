"""An image folder as a few-shot dataset: ragged classes, png and jpg, clear errors, episodes per class."""
import pytest
import torch
from PIL import Image

from course_lib.data.episodes import EpisodeSampler, fixed_episodes
from course_lib.data.folder import ImageFolderDataset, load_image_folder, read_image

# class name -> the grey level of each of its images (flat images, so a level identifies an image)
LEVELS = {"zebra": [20, 40, 60], "ant": [100, 110, 120, 130, 140, 150, 160], "moth": [200, 220, 240, 250]}


def write_folder(root, levels=LEVELS, size=(40, 30)):
    """One sub-folder per class; images alternate png and jpg (flat grey, so jpg keeps its level)."""
    for name, class_levels in levels.items():
        (root / name).mkdir(parents=True)
        for i, level in enumerate(class_levels):
            suffix = "png" if i % 2 == 0 else "jpg"
            Image.new("L", size, level).save(root / name / f"{i:02d}.{suffix}")
    return root


def level_of(image):
    """The grey level (0..255) of a flat ``[1, H, W]`` image in [0, 1]."""
    return round(255 * image.mean().item())


def test_a_folder_loads_as_classes_of_different_sizes(tmp_path):
    (tmp_path / "data" / ".hidden").mkdir(parents=True)                    # hidden folders are not classes
    root = write_folder(tmp_path / "data")
    (root / "ant" / "notes.txt").write_text("not an image")                 # other suffixes are skipped

    dataset = load_image_folder(root, image_size=16)

    assert [dataset.class_name(c) for c in range(dataset.num_classes)] == ["ant", "moth", "zebra"]
    assert [dataset.class_size(c) for c in range(3)] == [7, 4, 3]
    assert dataset.examples_per_class == 3, "the smallest class: code for equal classes stays within every class"
    assert dataset.example_shape == (1, 16, 16)
    ant = dataset.examples(0, torch.arange(7))
    assert ant.dtype == torch.float32 and ant.shape == (7, 1, 16, 16) and 0 <= ant.min() and ant.max() <= 1
    for c, name in enumerate(["ant", "moth", "zebra"]):
        levels = [level_of(x) for x in dataset.examples(c, torch.arange(dataset.class_size(c)))]
        assert levels == pytest.approx(LEVELS[name], abs=2), f"{name}: its own images, in file-name order"
    assert str(tmp_path) not in dataset.source and "image folder" in dataset.source and "data" in dataset.source
    assert "3 classes, 14 images (3 to 7 per class)" in dataset.source
    with pytest.raises(IndexError, match="'zebra' has 3 images"):
        dataset.examples(2, torch.tensor([3]))               # beyond its class, never into the next class


def test_episodes_draw_each_class_from_its_own_images(tmp_path):
    dataset = load_image_folder(write_folder(tmp_path), image_size=16)
    names = [dataset.class_name(c) for c in range(dataset.num_classes)]
    sampler = EpisodeSampler(dataset, n_way=2, k_shot=1, n_query=2)
    seen = {name: set() for name in names}
    for episode in fixed_episodes(sampler, 200, seed=1):
        for label, c in enumerate(episode.task.tolist()):
            drawn = torch.cat([episode.support_x[episode.support_y == label], episode.query_x[episode.query_y == label]])
            levels = {level_of(x) for x in drawn}
            assert len(levels) == 3, "k_shot + n_query distinct images"
            seen[names[c]] |= levels
    for name in names:
        assert sorted(seen[name]) == pytest.approx(LEVELS[name], abs=2), f"{name}: all its images and only its images"


def test_an_episode_asking_more_images_than_a_class_has_names_that_class(tmp_path):
    dataset = load_image_folder(write_folder(tmp_path), image_size=16)
    with pytest.raises(ValueError, match="smallest class, 'zebra', has only 3"):
        EpisodeSampler(dataset, n_way=2, k_shot=2, n_query=2)


def test_rgb_images_keep_their_colours_in_channel_order(tmp_path):
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "red.png")
    red = read_image(tmp_path / "red.png", image_size=8, channels=3)
    assert red.shape == (3, 8, 8) and red.dtype == torch.uint8
    assert red[0].eq(255).all() and red[1:].eq(0).all()
    grey = read_image(tmp_path / "red.png", image_size=8, channels=1)
    assert grey.shape == (1, 8, 8) and grey.eq(76).all(), "ITU-R 601 luma of pure red: 0.299 * 255"


def test_rotations_and_class_selection(tmp_path):
    dataset = load_image_folder(write_folder(tmp_path), image_size=16, rotations=True)
    assert dataset.num_classes == 12 and dataset.class_size(5) == 4 and dataset.class_name(5) == "moth (rot 90)"
    held_out = dataset.select_classes([2, 0])
    assert isinstance(held_out, ImageFolderDataset) and held_out.num_classes == 8
    assert [held_out.class_name(c) for c in (0, 4)] == ["zebra (rot 0)", "ant (rot 0)"]
    assert torch.equal(held_out.examples(4, torch.arange(7)), dataset.examples(0, torch.arange(7)))


def test_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist") as missing:
        load_image_folder(tmp_path / "nowhere")
    assert str(tmp_path) not in str(missing.value), "never this machine's absolute path"

    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("L", (8, 8)).save(loose / "a.png")
    with pytest.raises(ValueError, match="no class folders .*holds 1 images directly"):
        load_image_folder(loose)

    empty_class = write_folder(tmp_path / "empty")
    (empty_class / "ghost").mkdir()
    (empty_class / "ghost" / "readme.md").write_text("")
    with pytest.raises(ValueError, match="ghost holds no images"):
        load_image_folder(empty_class)

    broken = write_folder(tmp_path / "broken")
    (broken / "moth" / "03.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"class 'moth' of .*broken: cannot read the image .*03\.jpg"):
        load_image_folder(broken)

    with pytest.raises(ValueError, match="channels must be 1 .* or 3"):
        load_image_folder(write_folder(tmp_path / "ok"), channels=2)
