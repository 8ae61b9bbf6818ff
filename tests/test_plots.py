"""Figures have labelled axes and draw what they are given."""
import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from course_lib.course import plots  # noqa: E402
from course_lib.data.batches import Episode  # noqa: E402
from course_lib.evaluate import EvalResult  # noqa: E402
from course_lib.train import History  # noqa: E402


def test_task_grid_has_one_row_per_label_and_a_column_per_image():
    episode = Episode(torch.rand(6, 1, 28, 28), torch.tensor([0, 0, 1, 1, 2, 2]),
                      torch.rand(9, 1, 28, 28), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]), torch.arange(3))
    fig = plots.plot_task_grid(episode, n_query_shown=3, class_names=["a", "b", "c"])
    assert len(fig.axes) == 3 * (2 + 3)
    assert fig.axes[0].get_title() == "support" and fig.axes[2].get_title() == "query"
    assert fig.axes[5].get_ylabel() == "label 1\nb"


def test_learning_curves_and_validation_band():
    validation = EvalResult("accuracy", torch.tensor([0.5, 0.7, 0.6])).as_metrics()
    history = History([{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.0, **{f"val_{k}": v for k, v in validation.items()}}])
    ax = plots.plot_learning_curves(history).axes[0]
    assert ax.get_xlabel() == "meta-training step" and list(ax.lines[0].get_ydata()) == [2.0, 1.0]
    ax = plots.plot_validation(history).axes[0]
    assert ax.get_ylabel() == "query accuracy (%)"
    assert ax.lines[0].get_ydata()[0] == 100 * validation["accuracy"]
    assert len(ax.collections) == 1, "the 95% CI band"
