"""Self-checks for the exercises: each says what is wrong, not just that something is.

Introduced in the exercise notebooks (``exercises/``). A self-check cell calls one checker
with the learner's function; the checker calls it on known cases under a time limit and
raises ``AssertionError`` with a message that points back to the specification, or prints
what passed. The instructor's grader (``python -m course_lib grade``) counts the cells.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable

import torch

from .data.base import ClassDataset
from .data.episodes import Episode
from .evaluate import mean_confidence_interval


class CheckTimeout(AssertionError):
    """The learner's function ran longer than the check allows."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """Raise :class:`CheckTimeout` if the block runs longer than ``seconds`` (Unix main thread;
    elsewhere the block runs without a limit)."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def stop(signum, frame):
        raise CheckTimeout(f"{what} took longer than {seconds:g} s: look for an endless loop "
                           "or work that grows with the dataset instead of the episode")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _fail(name: str, message: str) -> None:
    raise AssertionError(f"{name}: {message}")


def _coded_dataset(n_classes: int = 10, per_class: int = 20) -> ClassDataset:
    """A dataset whose examples are numbers: class ``c``, example ``i`` holds ``c * 100 + i``."""
    values = (torch.arange(n_classes)[:, None] * 100 + torch.arange(per_class)[None]).float()
    return ClassDataset(values[..., None], [f"class {c}" for c in range(n_classes)], "coded numbers")


def check_episode_sampler(sample_episode: Callable, seconds: float = 10) -> None:
    """Check ``sample_episode(dataset, n_way, k_shot, n_query, generator) -> Episode``."""
    name = "sample_episode"
    dataset = _coded_dataset()
    with time_limit(seconds, name):
        episode = sample_episode(dataset, 5, 2, 3, torch.Generator().manual_seed(0))
        if not isinstance(episode, Episode):
            _fail(name, f"should return an Episode, got {type(episode).__name__}")
        for field, shape in [("support_x", (10, 1)), ("support_y", (10,)), ("query_x", (15, 1)), ("query_y", (15,))]:
            got = tuple(getattr(episode, field).shape)
            if got != shape:
                _fail(name, f"{field} should have shape {shape} for 5-way 2-shot with 3 queries, got {got}")
        for field in ("support_y", "query_y"):
            if getattr(episode, field).dtype != torch.long:
                _fail(name, f"{field} should hold integer labels (torch.long), got {getattr(episode, field).dtype}")
        if episode.support_y.bincount(minlength=5).tolist() != [2] * 5:
            _fail(name, f"support labels should be 0..4 with 2 examples each, got {episode.support_y.tolist()}")
        if episode.query_y.bincount(minlength=5).tolist() != [3] * 5:
            _fail(name, f"query labels should be 0..4 with 3 examples each, got {episode.query_y.tolist()}")
        support, query = set(episode.support_x.flatten().tolist()), set(episode.query_x.flatten().tolist())
        if len(support) < 10 or len(query) < 15:
            _fail(name, "an example appears twice: draw examples without replacement (torch.randperm)")
        if support & query:
            _fail(name, f"support and query share examples {sorted(support & query)[:3]}: they must be disjoint")
        for x, y, part in [(episode.support_x, episode.support_y, "support"), (episode.query_x, episode.query_y, "query")]:
            classes = (x.flatten() // 100).long()
            for label in range(5):
                if classes[y == label].unique().numel() != 1:
                    _fail(name, f"{part} examples with label {label} come from several classes")
        label_orders = set()
        generator = torch.Generator().manual_seed(1)
        for _ in range(20):
            e = sample_episode(dataset, 5, 1, 1, generator)
            label_orders.add(tuple((e.support_x.flatten()[e.support_y.argsort()] // 100).long().tolist()))
        if len(label_orders) < 15:
            _fail(name, "the classes chosen (or the labels they get) hardly vary between episodes: "
                        "pick classes at random in every call, using the generator")
        if all(list(order) == sorted(order) for order in label_orders):
            _fail(name, "label 0 always goes to the smallest class index: assign labels in random order")
        again = sample_episode(dataset, 5, 2, 3, torch.Generator().manual_seed(0))
        if not torch.equal(again.support_x, episode.support_x):
            _fail(name, "the same generator seed gave a different episode: draw all randomness from `generator`")
    print(f"{name}: all checks passed")


def check_confidence_interval(confidence_interval: Callable, seconds: float = 10) -> None:
    """Check ``confidence_interval(values) -> (mean, half_width)`` of a 95% t-interval."""
    name = "confidence_interval"
    cases = [torch.tensor([0.2, 0.4, 0.6, 0.8]), torch.rand(600, generator=torch.Generator().manual_seed(0))]
    with time_limit(seconds, name):
        for values in cases:
            got = confidence_interval(values)
            if not (isinstance(got, tuple) and len(got) == 2):
                _fail(name, f"should return a tuple (mean, half_width), got {got!r}")
            mean, half = (float(v) for v in got)
            want_mean, want_half = mean_confidence_interval(values)
            n = len(values)
            if abs(mean - want_mean) > 1e-6:
                _fail(name, f"the mean of {n} values should be {want_mean:.4f}, got {mean:.4f}")
            if abs(half - want_half) > 1e-4 * max(1.0, want_half):
                z_half = 1.959964 * values.double().std().item() / n ** 0.5
                biased = want_half * ((n - 1) / n) ** 0.5
                if abs(half - z_half) < 1e-4:
                    hint = "you used 1.96 (the normal quantile); with few values use Student's t with n-1 degrees of freedom"
                elif abs(half - biased) < 1e-4:
                    hint = "use the sample standard deviation (divide by n-1)"
                elif abs(half - 2 * want_half) < 1e-4:
                    hint = "return the half-width, not the full width of the interval"
                else:
                    hint = "half_width = t_{0.975, n-1} * sd / sqrt(n)"
                _fail(name, f"for {n} values the half-width should be {want_half:.5f}, got {half:.5f}: {hint}")
    print(f"{name}: all checks passed")


def check_nearest_neighbour(predict: Callable[[Episode], torch.Tensor], seconds: float = 10) -> None:
    """Check ``predict(episode) -> query labels [N*Q]`` of a 1-nearest-neighbour classifier."""
    name = "nearest_neighbour_predict"
    support_x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    query_x = torch.tensor([[1.0, 1.0], [9.0, 2.0], [1.0, 8.0], [6.0, 0.0]])
    support_y = torch.tensor([2, 0, 1])
    episode = Episode(support_x, support_y, query_x, torch.tensor([2, 0, 1, 0]), torch.arange(3))
    with time_limit(seconds, name):
        got = predict(episode)
        if got.shape != (4,):
            _fail(name, f"should return one label per query ([4] here), got shape {tuple(got.shape)}")
        if got.tolist() != [2, 0, 1, 0]:
            _fail(name, f"on a known 2-D case the labels should be [2, 0, 1, 0], got {got.tolist()}: "
                        "return the support *label* of the nearest support example, not its index")
        images = Episode(support_x.view(3, 1, 1, 2), support_y, query_x.view(4, 1, 1, 2),
                         torch.tensor([2, 0, 1, 0]), torch.arange(3))
        if predict(images).tolist() != [2, 0, 1, 0]:
            _fail(name, "images [n, C, H, W] should be flattened to vectors before measuring distances")
    print(f"{name}: all checks passed")


def _sinusoid_meta_batch(tasks: int = 3):
    """A tiny float64 regression problem for the MAML checks: an MLP and a few sinusoid tasks."""
    from .data.sinusoid import SinusoidTasks
    from .models import MLP

    torch.manual_seed(0)
    net = MLP((1, 8, 8, 1)).double()
    batch = SinusoidTasks(k_shot=5, n_query=5).sample_batch(tasks, torch.Generator().manual_seed(0))
    batch = Episode(batch.support_x.double(), batch.support_y.double(), batch.query_x.double(),
                    batch.query_y.double(), batch.task)
    return net, batch


def _reference_meta_loss(net, batch, inner_lr, inner_steps, first_order):
    from .meta.maml import MAML

    return MAML(net, inner_lr=inner_lr, inner_steps=inner_steps, first_order=first_order,
                task_loss=torch.nn.functional.mse_loss).meta_loss(batch)[0]


def _evaluate_at(net, params, x):
    return torch.func.functional_call(net, params, (x,))


def _gradient(net, loss) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, net.parameters())])


def check_inner_update(inner_update: Callable, seconds: float = 10) -> None:
    """Check ``inner_update(net, params, support_x, support_y, inner_lr, loss_fn, create_graph) -> params``."""
    name = "inner_update"
    mse = torch.nn.functional.mse_loss
    net, batch = _sinusoid_meta_batch(1)
    task = batch[0]
    params = dict(net.named_parameters())
    before = {k: v.detach().clone() for k, v in params.items()}
    with time_limit(seconds, name):
        adapted = inner_update(net, params, task.support_x, task.support_y, 0.1, mse, True)
        if not isinstance(adapted, dict) or set(adapted) != set(params):
            _fail(name, f"should return a dict with the keys {sorted(params)}, got {type(adapted).__name__}")
        if any(not torch.equal(before[k], params[k]) for k in params):
            _fail(name, "the network's parameters changed: build new tensors, do not update params in place")
        if adapted is params:
            _fail(name, "returned the same dict it was given: return a new dict of new tensors")
        from .meta.maml import MAML
        expected = MAML(net, inner_lr=0.1, task_loss=mse).adapt(task.support_x, task.support_y)
        for key in params:
            if adapted[key].shape != params[key].shape:
                _fail(name, f"{key} has shape {tuple(adapted[key].shape)}, expected {tuple(params[key].shape)}")
            if not torch.allclose(adapted[key], expected[key], atol=1e-10):
                step = adapted[key] - params[key]
                hint = (" (the step has the wrong sign: subtract the gradient)"
                        if torch.allclose(step, -(expected[key] - params[key]), atol=1e-10) else
                        ": theta' = theta - inner_lr * gradient of the support loss at params")
                _fail(name, f"adapted {key} is wrong{hint}")
        query_loss = mse(_evaluate_at(net, adapted, task.query_x), task.query_y)
        if not query_loss.requires_grad:
            _fail(name, "the adapted weights are cut off from the graph (detached?): no gradient can reach theta")
        second = _gradient(net, query_loss)
        want = _gradient(net, mse(_evaluate_at(net, expected, task.query_x), task.query_y))
        if not torch.allclose(second, want, rtol=1e-6, atol=1e-10):
            _fail(name, "with create_graph=True the outer gradient must flow through the inner step: pass "
                        "create_graph=create_graph to torch.autograd.grad (the Hessian term is missing)")
        first_params = dict(net.named_parameters())
        first = inner_update(net, first_params, task.support_x, task.support_y, 0.1, mse, False)
        first_gradient = _gradient(net, mse(_evaluate_at(net, first, task.query_x), task.query_y))
        if torch.allclose(first_gradient, second, rtol=1e-6, atol=1e-10):
            _fail(name, "create_graph=False should give the first-order gradient, but the Hessian term is still there")
    print(f"{name}: all checks passed")


def check_maml_meta_loss(maml_meta_loss: Callable, seconds: float = 20) -> None:
    """Check ``maml_meta_loss(net, batch, inner_lr, inner_steps, loss_fn, first_order) -> scalar``."""
    name = "maml_meta_loss"
    mse = torch.nn.functional.mse_loss
    net, batch = _sinusoid_meta_batch(3)
    with time_limit(seconds, name):
        for steps, first_order in [(1, False), (2, False), (2, True)]:
            loss = maml_meta_loss(net, batch, 0.05, steps, mse, first_order)
            if not torch.is_tensor(loss) or loss.dim() != 0:
                _fail(name, f"should return a scalar tensor, got {loss!r}")
            want = _reference_meta_loss(net, batch, 0.05, steps, first_order)
            order = "first" if first_order else "second"
            if not torch.allclose(loss, want, rtol=1e-8):
                single = _reference_meta_loss(net, Episode(*(t[:1] for t in (batch.support_x, batch.support_y,
                                                  batch.query_x, batch.query_y)), batch.task[:1]), 0.05, steps, first_order)
                hint = ("it equals the loss of the first task only: average over all tasks"
                        if torch.allclose(loss, single, rtol=1e-8) else
                        f"with {steps} inner step(s) the mean query loss after adaptation should be {want.item():.6f}")
                _fail(name, f"{order} order, {steps} inner step(s): got {loss.item():.6f}; {hint}")
            if not torch.allclose(_gradient(net, loss), _gradient(net, want), rtol=1e-6, atol=1e-10):
                _fail(name, f"{order} order, {steps} inner step(s): the value is right but the meta-gradient is not: "
                            "check create_graph=not first_order in the inner updates")
    print(f"{name}: all checks passed")


def check_reptile_step(reptile_step: Callable, seconds: float = 10) -> None:
    """Check ``reptile_step(theta, adapted_params, outer_lr) -> new theta`` (Reptile's outer step, 04_reptile).

    ``theta`` and each element of the list ``adapted_params`` are dicts of tensors with the same names;
    the answer is ``theta + outer_lr * (mean over tasks of phi - theta)``, as new tensors.
    """
    name = "reptile_step"
    generator = torch.Generator().manual_seed(0)
    theta = {"hidden.weight": torch.randn(4, 3, generator=generator, dtype=torch.float64),
             "hidden.bias": torch.randn(4, generator=generator, dtype=torch.float64)}
    adapted = [{key: p + torch.randn(p.shape, generator=generator, dtype=torch.float64) for key, p in theta.items()}
               for _ in range(3)]
    originals = ({k: v.clone() for k, v in theta.items()}, [{k: v.clone() for k, v in phi.items()} for phi in adapted])

    def interpolate(target: dict, weight: float) -> dict:
        return {k: theta[k] + weight * (target[k] - theta[k]) for k in theta}

    mean = {k: torch.stack([phi[k] for phi in adapted]).mean(dim=0) for k in theta}
    outer_lr = 0.2
    mistakes = [
        ({k: theta[k] - outer_lr * (mean[k] - theta[k]) for k in theta},
         "theta moves away from the adapted weights: the step is + outer_lr * (mean phi - theta)"),
        (interpolate(adapted[-1], outer_lr), "only the last task's adapted weights were used: average over all tasks"),
        (interpolate(adapted[0], outer_lr), "only the first task's adapted weights were used: average over all tasks"),
        (interpolate(mean, outer_lr * len(adapted)), "the task differences were summed: average them (divide by the number of tasks)"),
        (mean, "returned the mean of the adapted weights: that is the update for outer_lr = 1 only; interpolate with outer_lr"),
        (interpolate(mean, 1 - outer_lr), "the interpolation weights are swapped: theta keeps the weight 1 - outer_lr"),
        ({k: theta[k] - mean[k] for k in theta}, "returned the pseudo-gradient theta - mean phi, not the new theta"),
        ({k: outer_lr * (mean[k] - theta[k]) for k in theta}, "returned only the step: add it to theta"),
    ]
    with time_limit(seconds, name):
        got = reptile_step(theta, adapted, outer_lr)
        if not isinstance(got, dict) or set(got) != set(theta):
            _fail(name, f"should return a dict with the keys of theta {sorted(theta)}, got {type(got).__name__}")
        if any(not torch.equal(theta[k], originals[0][k]) for k in theta):
            _fail(name, "theta was changed in place: return new tensors (theta[name] + ..., not theta[name] += ...)")
        if any(not torch.equal(phi[k], old[k]) for phi, old in zip(adapted, originals[1]) for k in theta):
            _fail(name, "the adapted weights were changed in place: leave them as they are")
        for k in theta:
            if tuple(got[k].shape) != tuple(theta[k].shape):
                _fail(name, f"{k} has shape {tuple(got[k].shape)}, expected {tuple(theta[k].shape)}")
        if not all(torch.allclose(got[k], want, atol=1e-10) for k, want in interpolate(mean, outer_lr).items()):
            for wrong, hint in mistakes:
                if all(torch.allclose(got[k], wrong[k], atol=1e-10) for k in theta):
                    _fail(name, hint)
            _fail(name, "expected theta + outer_lr * (mean over tasks of phi - theta) for every parameter name")
        single = reptile_step(theta, adapted[1:2], 1.0)
        if not all(torch.allclose(single[k], adapted[1][k], atol=1e-10) for k in theta):
            _fail(name, "with one task and outer_lr = 1 the new theta should be that task's adapted weights")
    print(f"{name}: all checks passed")


def _hand_embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    """Six 2-D embeddings of 3 classes, labels in shuffled order and unequal counts (1, 2 and 3 shots)."""
    embeddings = torch.tensor([[1.0, 0.0], [4.0, 4.0], [0.0, 6.0], [3.0, 2.0], [2.0, 3.0], [6.0, 2.0]])
    labels = torch.tensor([0, 2, 1, 2, 1, 2])
    return embeddings, labels


def check_prototypes(prototypes: Callable, seconds: float = 10) -> None:
    """Check ``prototypes(embeddings [N*K, D], labels [N*K], n_way) -> [N, D]`` class means."""
    name = "prototypes"
    embeddings, labels = _hand_embeddings()
    want = torch.tensor([[1.0, 0.0], [1.0, 4.5], [13 / 3, 8 / 3]])
    with time_limit(seconds, name):
        got = prototypes(embeddings, labels, 3)
        if not isinstance(got, torch.Tensor):
            _fail(name, f"should return a tensor [n_way, D], got {type(got).__name__}")
        if tuple(got.shape) != (3, 2):
            _fail(name, f"should return one row per class, [n_way, D] = (3, 2) here, got {tuple(got.shape)}")
        if not torch.allclose(got.float(), want, atol=1e-5):
            counts = labels.bincount(minlength=3)[:, None].float()
            if torch.allclose(got.float(), want * counts, atol=1e-5):
                hint = "you summed the embeddings of each class: divide by the number of examples of that class"
            elif torch.allclose(got.float(), want * counts / 2, atol=1e-5):
                hint = ("you divided every class's sum by the same number (N*K / n_way): "
                        "classes may have different numbers of examples, divide by each class's own count")
            elif torch.allclose(got.float(), embeddings.mean(0).expand(3, -1), atol=1e-5):
                hint = "every row is the mean of the whole support set: average only the examples with label k"
            elif any(torch.allclose(got.float(), grouped, atol=1e-5)
                     for grouped in (embeddings.view(3, 2, 2).mean(1), embeddings.view(2, 3, 2).mean(0))):
                hint = ("you reshaped the support set as if it were grouped by class: its order is not guaranteed, "
                        "select the examples of class k with the labels (labels == k)")
            else:
                hint = "row k should be the mean of the embeddings whose label is k"
            _fail(name, f"on a hand case (labels {labels.tolist()}) the prototypes should be "
                        f"{[[round(v, 3) for v in row] for row in want.tolist()]}, got "
                        f"{[[round(v, 3) for v in row] for row in got.float().tolist()]}: {hint}")
        generator = torch.Generator().manual_seed(0)
        support = torch.randn(20, 64, generator=generator, requires_grad=True)
        labels = torch.randperm(20, generator=generator) % 5
        got = prototypes(support, labels, 5)
        want = torch.stack([support[labels == k].mean(0) for k in range(5)])
        if tuple(got.shape) != (5, 64) or not torch.allclose(got, want, atol=1e-5):
            _fail(name, "a 5-way 4-shot support set of 64-d embeddings gave wrong prototypes: "
                        "check that you average over examples (dim 0), not over features")
        if not got.requires_grad:
            _fail(name, "the prototypes lost their gradient: meta-training backpropagates through them, so use "
                        "torch operations only (no .numpy(), .item(), .tolist() or torch.no_grad())")
    print(f"{name}: all checks passed")


def check_squared_euclidean(squared_euclidean: Callable, seconds: float = 10) -> None:
    """Check ``squared_euclidean(a [M, D], b [N, D]) -> [M, N]`` of squared distances ``||a_i - b_j||^2``."""
    name = "squared_euclidean"
    a = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [3.0, 0.0, 4.0], [1.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    want = torch.tensor([[0.0, 1.0], [9.0, 8.0], [25.0, 20.0], [3.0, 2.0]])
    with time_limit(seconds, name):
        got = squared_euclidean(a, b)
        if not isinstance(got, torch.Tensor):
            _fail(name, f"should return a tensor [M, N], got {type(got).__name__}")
        if tuple(got.shape) == (2, 4):
            _fail(name, "the result is transposed: row i should hold the distances of a[i] (the queries) "
                        "to every row of b (the prototypes), shape [M, N] = (4, 2) here")
        if tuple(got.shape) != (4, 2):
            _fail(name, f"for a [4, 3] and b [2, 3] the result should be [4, 2], got {tuple(got.shape)}: "
                        "compare every row of a with every row of b, summing over the D features")
        got = got.float()
        if not torch.allclose(got, want, atol=1e-4):
            if torch.allclose(got, want.sqrt(), atol=1e-4):
                hint = ("you returned the Euclidean distance (torch.cdist, or a square root); ProtoNet uses its "
                        "square ||a_i - b_j||^2: that is what makes it a linear classifier")
            elif torch.allclose(got, -want, atol=1e-4):
                hint = "you returned minus the distance: return the distance; the logits are its negative"
            elif torch.allclose(got, want / 3, atol=1e-4):
                hint = "you averaged over the D features: sum the squared differences instead"
            else:
                hint = "entry (i, j) should be sum over d of (a[i, d] - b[j, d])**2"
            _fail(name, f"on a hand case the squared distances should be {want.tolist()}, got {got.tolist()}: {hint}")
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(75, 64, generator=generator, requires_grad=True)
        b = torch.randn(5, 64, generator=generator)
        got = squared_euclidean(a, b)
        if not torch.allclose(got, ((a[:, None] - b[None]) ** 2).sum(-1), rtol=1e-4, atol=1e-3):
            _fail(name, "75 queries against 5 prototypes in 64-d gave wrong distances: the hand case passed, "
                        "so look for a loop or a shape that only works for small inputs")
        if not got.requires_grad:
            _fail(name, "the distances lost their gradient: use torch operations only (no .numpy() or .item())")
    print(f"{name}: all checks passed")


def check_protonet_logits(protonet_logits: Callable, seconds: float = 10) -> None:
    """Check ``protonet_logits(support [N*K, D], support_y [N*K], query [N*Q, D], n_way) -> [N*Q, N]``,
    the logits ``-||f(x) - c_k||^2`` of Prototypical Networks (up to a constant per query, which
    leaves the softmax unchanged: the linear-head form ``2 c_k . f(x) - ||c_k||^2`` passes too)."""
    name = "protonet_logits"
    support, support_y = _hand_embeddings()
    query = torch.tensor([[1.0, 1.0], [1.0, 4.0], [4.0, 3.0]])
    protos = torch.tensor([[1.0, 0.0], [1.0, 4.5], [13 / 3, 8 / 3]])
    want = -((query[:, None] - protos[None]) ** 2).sum(-1)
    with time_limit(seconds, name):
        got = protonet_logits(support, support_y, query, 3)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (3, 3):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            _fail(name, f"should return logits [N*Q, n_way] = (3, 3) here, got {shape}")
        got = got.float()
        if not torch.allclose(got.log_softmax(1), want.log_softmax(1), atol=1e-4):
            if torch.allclose(got, -want, atol=1e-4):
                hint = "you returned the distances: a larger logit must mean a closer prototype, so negate them"
            elif torch.allclose(got, -(-want).sqrt(), atol=1e-4):
                hint = "you used the Euclidean distance; ProtoNet uses the squared distance"
            else:
                hint = "compute the prototypes of the support set, then minus the squared distances to them"
            _fail(name, f"on a hand case the logits should be "
                        f"{[[round(v, 3) for v in row] for row in want.tolist()]}, got "
                        f"{[[round(v, 3) for v in row] for row in got.tolist()]}: {hint}")
        if got.argmax(1).tolist() != [0, 1, 2]:
            _fail(name, "each query should be closest to its own class's prototype here")
    print(f"{name}: all checks passed")


def _direction_clusters(n_way: int, per_class: int, dim: int,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative features separable by direction: class ``k`` points mostly along axis ``k``, with a
    random length per example; labels in shuffled order (a support set need not be sorted by label)."""
    labels = torch.randperm(n_way * per_class, generator=generator) % n_way
    x = 0.2 * torch.rand(len(labels), dim, generator=generator)
    x[torch.arange(len(labels)), labels] += 1.0
    return x * (0.5 + 4 * torch.rand(len(labels), 1, generator=generator)), labels


def check_linear_probe(linear_probe: Callable, seconds: float = 30) -> None:
    """Check ``linear_probe(support_features [N*K, D], support_y [N*K], query_features [N*Q, D], n_way)
    -> query logits [N*Q, n_way]`` of a logistic regression fitted on L2-normalised support features.

    The learner's function is called with the global torch seed reset each time, so a probe that
    starts from random weights gives the same fit on the same support set.
    """
    name = "linear_probe"
    generator = torch.Generator().manual_seed(0)
    support, support_y = _direction_clusters(5, 3, 16, generator)
    query, query_y = _direction_clusters(5, 4, 16, generator)
    originals = support.clone(), query.clone()

    def probe(support_features, labels, query_features, n_way):
        torch.manual_seed(0)
        logits = linear_probe(support_features, labels, query_features, n_way)
        return logits.detach().float() if isinstance(logits, torch.Tensor) else logits

    with time_limit(seconds, name):
        got = probe(support, support_y, query, 5)
        if not isinstance(got, torch.Tensor):
            _fail(name, f"should return a tensor of query logits [N*Q, n_way], got {type(got).__name__}")
        if not (torch.equal(support, originals[0]) and torch.equal(query, originals[1])):
            _fail(name, "the features passed in were changed: normalise into new tensors (F.normalize(x, dim=-1) "
                        "or x / x.norm(dim=-1, keepdim=True)); `x /= ...` overwrites the caller's features")
        if tuple(got.shape) == (20,):
            _fail(name, "returned one value per query (labels?): return the logits [N*Q, n_way] = (20, 5) here; "
                        "the evaluation takes their argmax")
        if tuple(got.shape) == (5, 20):
            _fail(name, "returned [n_way, N*Q] = (5, 20): the logits are transposed, one row per query is expected")
        if tuple(got.shape) != (20, 5):
            _fail(name, f"should return logits [N*Q, n_way] = (20, 5) for 20 queries of a 5-way task, "
                        f"got {tuple(got.shape)}")
        if not torch.equal(probe(support, support_y, support, 5).argmax(1), support_y):
            _fail(name, "does not fit linearly separable features: the fitted head should classify every support "
                        "example correctly. Use support_y as the targets (the support set is not sorted by label) "
                        "and minimise the cross-entropy long enough (e.g. 100 steps of Adam with lr 0.1)")
        rescaled = probe(3 * support, support_y, 0.5 * query, 5)
        if not torch.allclose(rescaled, got, rtol=1e-2, atol=0.05):
            _fail(name, "the logits changed when the features were rescaled (support x3, queries x0.5): "
                        "L2-normalise every feature vector, z = x / ||x|| over the last dimension, "
                        "before fitting and before predicting")
        alone = probe(support, support_y, query[:2], 5)
        if not torch.allclose(alone, got[:2], rtol=1e-2, atol=0.05):
            _fail(name, "the logits of the first two queries changed when the other queries were left out: "
                        "fit on the support set only, and normalise each query on its own (x.norm() without dim=-1 "
                        "divides by the norm of the whole matrix)")
        if not torch.equal(got.argmax(1), query_y):
            _fail(name, "fits the support set but misclassifies queries of a linearly separable task: "
                        "predict with the fitted weights on the normalised query features, W z + b")
        support3, support3_y = _direction_clusters(3, 5, 8, generator)
        query3, query3_y = _direction_clusters(3, 4, 8, generator)
        got3 = probe(support3, support3_y, query3, 3)
        if tuple(got3.shape) != (12, 3):
            _fail(name, f"for a 3-way task with 12 queries the logits should be (12, 3), got {tuple(got3.shape)}: "
                        "use n_way and the shapes of the inputs, not fixed sizes")
        if not torch.equal(got3.argmax(1), query3_y):
            _fail(name, "misclassifies a linearly separable 3-way 5-shot task in 8 dimensions")
    print(f"{name}: all checks passed")


def _tokens_text(tokens: torch.Tensor) -> str:
    return str([[round(v, 2) for v in row] for row in tokens.tolist()])


def check_regression_sequence(regression_sequence: Callable, seconds: float = 10) -> None:
    """Check ``regression_sequence(x [B, n, d], y [B, n]) -> [B, 2n, d+1]``, the tokens
    ``(x_1, 0), (0, y_1), (x_2, 0), (0, y_2), ...`` of :func:`course_lib.meta.icl.regression_sequence`."""
    from .meta.icl import regression_sequence as reference

    name = "regression_sequence"
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    y = torch.tensor([[10.0, 20.0]])
    want = reference(x, y)
    with time_limit(seconds, name):
        got = regression_sequence(x, y)
        if not isinstance(got, torch.Tensor):
            _fail(name, f"should return a tensor [B, 2n, d+1], got {type(got).__name__}")
        shape = tuple(got.shape)
        if shape == (1, 2, 3):
            _fail(name, "returned one token per example (n tokens): x_i and y_i are separate tokens, "
                        "so the sequence has 2n of them, [B, 2n, d+1] = (1, 4, 3) here")
        if shape == (1, 4, 2):
            _fail(name, "the tokens have d slots: give them d + 1, the first d for x and the last one for y, "
                        "so that an x token and a y token never share a slot")
        if shape != (1, 4, 3):
            _fail(name, f"for x [1, 2, 2] and y [1, 2] the sequence should be [B, 2n, d+1] = (1, 4, 3), got {shape}")
        got = got.float()
        if not torch.equal(got, want):
            x_tokens, y_tokens = want[:, 0::2], want[:, 1::2]
            garg_y = torch.nn.functional.pad(y[..., None], (0, 2))            # (y_i, 0, 0)
            if torch.equal(got, torch.stack([y_tokens, x_tokens], dim=2).flatten(1, 2)):
                hint = ("x and y are swapped: the sequence starts with x_1, then y_1 (the model predicts y_i "
                        "at the x_i token, which must come before y_i)")
            elif torch.equal(got, torch.cat([x_tokens, y_tokens], dim=1)):
                hint = ("all x tokens come first, then all y tokens: interleave them, x_1, y_1, x_2, y_2, ... "
                        "(torch.stack([x_tokens, y_tokens], dim=2) then flatten dims 1 and 2)")
            elif torch.equal(got[:, 0::2], x_tokens) and torch.equal(got[:, 1::2], garg_y):
                hint = ("y_i sits in the first slot, (y_i, 0, ..., 0): the course puts it in the last slot, "
                        "(0, ..., 0, y_i), so that it never shares a slot with x")
            elif torch.equal(got[:, 1::2], y_tokens) and torch.equal(got[:, 0::2, 1:], x):
                hint = "x_i should fill the first d slots and leave the last one 0: pad on the right, (x_i, 0)"
            else:
                hint = "token 2i should be (x_i, 0) and token 2i+1 should be (0, ..., 0, y_i) (counting from 0)"
            _fail(name, f"for x = {x[0].tolist()}, y = {y[0].tolist()} the tokens should be "
                        f"{_tokens_text(want[0])}, got {_tokens_text(got[0])}: {hint}")
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(4, 6, 3, generator=generator, requires_grad=True)
        y = torch.randn(4, 6, generator=generator)
        got = regression_sequence(x, y)
        want = reference(x, y)
        if tuple(got.shape) != tuple(want.shape) or not torch.allclose(got, want):
            if tuple(got.shape) == tuple(want.shape) and torch.allclose(got.flatten(0, 1).sort(0).values,
                                                                        want.flatten(0, 1).sort(0).values):
                hint = ("the right tokens in the wrong places: tasks or positions are mixed up "
                        "(check which dimensions you stack, flatten or reshape)")
            else:
                hint = "the hand case passed, so look for sizes written into the code instead of read from x"
            _fail(name, f"4 tasks of 6 points in 3 dimensions gave a wrong sequence: {hint}")
        if not got.requires_grad:
            _fail(name, "the tokens lost their gradient: use torch operations only (no .tolist() or .numpy())")
    print(f"{name}: all checks passed")


def _vector_episodes(batch_size: int = 3, n_way: int = 3, k_shot: int = 2, n_query: int = 2,
                     dim: int = 4) -> Episode:
    """Episodes of random vectors whose support labels are shuffled (not grouped by class)."""
    generator = torch.Generator().manual_seed(0)
    support_y = torch.stack([torch.randperm(n_way * k_shot, generator=generator) % n_way for _ in range(batch_size)])
    query_y = torch.arange(n_way).repeat_interleave(n_query).expand(batch_size, -1).clone()
    return Episode(torch.randn(batch_size, n_way * k_shot, dim, generator=generator), support_y,
                   torch.randn(batch_size, n_way * n_query, dim, generator=generator), query_y,
                   torch.arange(n_way).expand(batch_size, -1).clone())


def check_episode_sequences(episode_sequences: Callable, seconds: float = 10) -> None:
    """Check ``episode_sequences(batch: Episode, n_way) -> (inputs [B*Q, S+1, D], labels [B*Q, S+1])``:
    one sequence per query, the episode's support then the query, the query's label ``n_way``
    ("unknown"); the same as :func:`course_lib.meta.icl.build_sequence` with ``unknown_label=n_way``."""
    from .meta.icl import build_sequence

    name = "episode_sequences"
    batch = _vector_episodes()
    B, S, D = batch.support_x.shape
    Q = batch.query_x.shape[1]
    want_inputs, want_labels = build_sequence(batch.support_x, batch.support_y, batch.query_x, unknown_label=3)
    originals = batch.support_y.clone(), batch.query_y.clone()
    with time_limit(seconds, name):
        got = episode_sequences(batch, 3)
        if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)):
            _fail(name, "should return a pair of tensors (inputs [B*Q, S+1, D], labels [B*Q, S+1])")
        if not (torch.equal(batch.support_y, originals[0]) and torch.equal(batch.query_y, originals[1])):
            _fail(name, "the episode's labels were changed: build new tensors (torch.cat, torch.full) "
                        "instead of writing into batch.support_y or batch.query_y")
        inputs, labels = got
        if tuple(inputs.shape) == (B, S + Q, D):
            _fail(name, f"all queries of an episode are in one sequence, [B, S+Q, D] = {(B, S + Q, D)}: each "
                        "query needs its own sequence (support, then that query), or the later queries "
                        "would see the earlier ones; expected [B*Q, S+1, D] = " f"{(B * Q, S + 1, D)}")
        if tuple(inputs.shape) != (B * Q, S + 1, D):
            _fail(name, f"inputs should be [B*Q, S+1, D] = {(B * Q, S + 1, D)} for {B} episodes of {S} support "
                        f"examples and {Q} queries, got {tuple(inputs.shape)}")
        if tuple(labels.shape) != (B * Q, S + 1):
            _fail(name, f"labels should be [B*Q, S+1] = {(B * Q, S + 1)}, one per token, got {tuple(labels.shape)}")
        if labels.dtype not in (torch.int64, torch.int32):
            _fail(name, f"labels should be integers (they index the label embedding), got {labels.dtype}")
        query_labels = batch.query_y.flatten()
        if torch.equal(labels[:, -1], query_labels):
            _fail(name, "the query's token carries its true label: the model would copy it instead of reading "
                        "its context. The last label must be n_way, \"unknown\", in every sequence")
        if torch.equal(inputs[:, 0], batch.query_x.flatten(0, 1)):
            _fail(name, "the query comes first: put it last, after the support set; the classifier reads its "
                        "logits at the last position, which (causal attention) is the only one that sees the "
                        "whole support set")
        if not torch.all(labels[:, -1] == 3):
            _fail(name, f"the query's label should be n_way = 3 (\"unknown\") in every sequence, got "
                        f"{labels[:, -1].tolist()}")
        if not torch.equal(inputs[:, -1], want_inputs[:, -1]):
            if torch.equal(inputs[:, -1], batch.query_x.transpose(0, 1).flatten(0, 1)):
                hint = "they are in query-major order: sequence b*Q + q should end with query q of episode b"
            else:
                hint = "sequence b*Q + q should end with batch.query_x[b, q]"
            _fail(name, f"the queries are misplaced: {hint}")
        if not torch.equal(inputs[:, :-1], want_inputs[:, :-1]):
            if torch.equal(inputs[:, :-1], batch.support_x.repeat(Q, 1, 1)):
                hint = ("sequence b*Q + q holds the support set of another episode: .repeat tiles the whole "
                        "batch Q times; repeat each episode Q times in place with repeat_interleave(Q, dim=0)")
            else:
                hint = "the first S tokens of sequence b*Q + q should be batch.support_x[b], in its order"
            _fail(name, f"the support sets are misplaced: {hint}")
        if not torch.equal(labels, want_labels):
            if torch.equal(labels[:, :-1].sort(dim=1).values, want_labels[:, :-1].sort(dim=1).values):
                hint = ("each support label must stay with its own example (the support set is not sorted "
                        "by label): take batch.support_y as it is")
            else:
                hint = "the first S labels of sequence b*Q + q should be batch.support_y[b]"
            _fail(name, f"the support labels are misaligned with their inputs: {hint}")
        other = _vector_episodes(batch_size=2, n_way=5, k_shot=1, n_query=3, dim=7)
        want_inputs, want_labels = build_sequence(other.support_x, other.support_y, other.query_x, unknown_label=5)
        inputs, labels = episode_sequences(other, 5)
        if not (torch.equal(inputs, want_inputs) and torch.equal(labels, want_labels)):
            _fail(name, "2 episodes of 5-way 1-shot with 3 queries per class in 7 dimensions gave wrong sequences: "
                        "read the sizes from the tensors and n_way, do not write them into the code")
    print(f"{name}: all checks passed")


def check_mean_pool(mean_pool: Callable, seconds: float = 10) -> None:
    """Check ``mean_pool(token_embeddings [B, T, D], attention_mask [B, T]) -> [B, D]``."""
    from .text.encoder import mean_pool as reference

    name = "mean_pool"
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    with time_limit(seconds, name):
        pooled = mean_pool(hidden, mask)
        if not torch.is_tensor(pooled) or pooled.shape != (3, 4):
            _fail(name, f"should return a [B, D] = [3, 4] tensor, got {getattr(pooled, 'shape', pooled)}")
        want = reference(hidden, mask)
        if not torch.allclose(pooled, want, atol=1e-6):
            if torch.allclose(pooled, hidden.mean(dim=1), atol=1e-6):
                hint = "it is the plain mean over all T positions: padding (mask 0) must not count"
            elif torch.allclose(pooled, (hidden * mask[..., None]).sum(dim=1) / hidden.shape[1], atol=1e-6):
                hint = "padding is zeroed but the sum is divided by T: divide by the number of real tokens"
            elif torch.allclose(pooled, (hidden * mask[..., None]).sum(dim=1), atol=1e-6):
                hint = "that is the masked sum: divide it by the number of real tokens, sum_t m_t"
            else:
                hint = "expected sum_t m_t h_t / sum_t m_t for each sentence"
            _fail(name, hint)
        noisy = hidden.clone()
        noisy[mask == 0] = 1e3
        if not torch.allclose(mean_pool(noisy, mask), want, atol=1e-4):
            _fail(name, "the result changes when the vectors at padded positions change: multiply by the mask")
        empty = mean_pool(hidden[:1], torch.zeros(1, 5, dtype=torch.long))
        if not torch.isfinite(empty).all():
            _fail(name, "a sentence without tokens (all-zero mask) gives NaN or inf: clamp the count, e.g. "
                        "count.clamp_min(1e-9)")
    print(f"{name}: all checks passed")


class _TinyAdaptedNet(torch.nn.Module):
    """A frozen linear layer with a low-rank (LoRA-style) change, a trainable scale that is not a fast weight,
    and a head: the network of the fast-weight checks."""

    def __init__(self):
        super().__init__()
        self.base = torch.nn.Linear(6, 8).double().requires_grad_(False)
        self.lora_A = torch.nn.Parameter(0.3 * torch.randn(2, 6, dtype=torch.float64))
        self.lora_B = torch.nn.Parameter(0.3 * torch.randn(8, 2, dtype=torch.float64))
        self.scale = torch.nn.Parameter(torch.full((8,), 1.5, dtype=torch.float64))
        self.head = torch.nn.Linear(8, 3).double()

    def forward(self, x):
        return self.head(torch.tanh(self.scale * (self.base(x) + x @ self.lora_A.T @ self.lora_B.T)))


def check_lora_inner_step(lora_inner_step: Callable, seconds: float = 10) -> None:
    """Check ``lora_inner_step(net, params, support_x, support_y, lr, adapted_if) -> params``."""
    from .text.lora import is_fast_weight

    name = "lora_inner_step"
    torch.manual_seed(0)
    net = _TinyAdaptedNet()
    x, y = torch.randn(6, 6, dtype=torch.float64), torch.arange(3).repeat(2)
    # adapted weights from an earlier step: the step must use these, not the module's own weights
    params = {k: (v.detach() + 0.2 * torch.randn_like(v)).requires_grad_() if v.requires_grad else v
              for k, v in net.named_parameters()}
    module_before = {k: v.detach().clone() for k, v in net.named_parameters()}

    def step_at(weights):
        fast = {k: v.detach().requires_grad_() for k, v in weights.items() if is_fast_weight(k)}
        loss = torch.nn.functional.cross_entropy(torch.func.functional_call(net, {**weights, **fast}, (x,)), y)
        grads = torch.autograd.grad(loss, list(fast.values()))
        return {**weights, **{k: v.detach() - 0.5 * g for (k, v), g in zip(fast.items(), grads)}}

    with time_limit(seconds, name):
        adapted = lora_inner_step(net, params, x, y, 0.5, is_fast_weight)
        if not isinstance(adapted, dict) or set(adapted) != set(params):
            _fail(name, f"should return a dict with the keys {sorted(params)}, got {type(adapted).__name__}")
        if any(not torch.equal(module_before[k], v) for k, v in net.named_parameters()):
            _fail(name, "the network's own weights changed: return new tensors, never update them in place")
        if "parameters" in vars(net):
            _fail(name, "do not assign to net.parameters: the forward pass never reads that attribute (notebook 07)")
        for key in ("base.weight", "base.bias", "scale"):
            if not torch.equal(adapted[key], params[key]):
                _fail(name, f"{key} changed: only the fast weights (those with adapted_if(name) True) adapt; "
                            "frozen and outer-loop-only weights stay as they are")
        want, at_module = step_at(params), step_at(dict(net.named_parameters()))
        for key in ("lora_A", "lora_B", "head.weight", "head.bias"):
            if adapted[key].shape != params[key].shape:
                _fail(name, f"{key} has shape {tuple(adapted[key].shape)}, expected {tuple(params[key].shape)}")
            if not torch.allclose(adapted[key], want[key], atol=1e-10):
                if torch.allclose(adapted[key], params[key]):
                    hint = f"{key} did not change: it is a fast weight (adapted_if({key!r}) is True)"
                elif torch.allclose(adapted[key] - params[key], at_module[key] - dict(net.named_parameters())[key]):
                    hint = ("the gradient was taken at the module's own weights (net(x)), not at params: "
                            "evaluate with torch.func.functional_call(net, params, (x,))")
                elif torch.allclose(adapted[key] - params[key], params[key] - want[key], atol=1e-10):
                    hint = "the step has the wrong sign: subtract lr * gradient"
                else:
                    hint = "expected params[name] - lr * (gradient of the support cross-entropy at params)"
                _fail(name, f"{key}: {hint}")
    print(f"{name}: all checks passed")


def _tiny_causal_lm():
    """A randomly initialised 2-layer GPT-2 over 40 tokens (built locally, nothing downloaded), in eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=40, n_positions=32, n_embd=16, n_layer=2, n_head=2, bos_token_id=None,
                        eos_token_id=None, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).eval()


def check_label_log_likelihood(label_log_likelihood: Callable, seconds: float = 20) -> None:
    """Check ``label_log_likelihood(model, prompt_ids, label_ids, length_normalise) -> score`` of one
    prompt and one label: ``sum_t log p(c_t | prompt, c_<t)``, divided by the label's length if asked.

    Compared with the library's scoring (``course_lib.text.prompting``) on a tiny random GPT-2; the
    typical mistakes are recognised and named.
    """
    from .text.prompting import label_log_likelihood as reference, pack_pairs
    name = "label_log_likelihood"
    model = _tiny_causal_lm()
    cases = [([5, 9, 2, 11, 3, 30], [7]), ([5, 9, 2, 11, 3, 30], [7, 8, 12]), ([21], [4, 33])]

    def variants(prompt, label):
        ids = torch.tensor([prompt + label])
        logits = model(input_ids=ids).logits[0].double()
        log_probs = logits.log_softmax(-1)
        start = len(prompt)
        targets = ids[0, start:]
        right = torch.arange(start - 1, start + len(label) - 1)
        return {
            "own position": log_probs[right + 1, targets].sum().item(),
            "prompt too": log_probs[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().item(),
            "no log_softmax": logits[right, targets].sum().item(),
            "softmax": logits.softmax(-1)[right, targets].sum().item(),
        }

    def call(prompt, label, normalise):
        with torch.no_grad():
            got = label_log_likelihood(model, list(prompt), list(label), normalise)
        if isinstance(got, torch.Tensor):
            if got.numel() != 1:
                _fail(name, f"should return one number (a 0-d tensor or a float), got a tensor of shape "
                            f"{tuple(got.shape)}: sum the label tokens' log-probabilities")
            got = got.item()
        if not isinstance(got, (float, int)):
            _fail(name, f"should return one number, got {type(got).__name__}")
        return float(got)

    with time_limit(seconds, name):
        for prompt, label in cases:
            with torch.no_grad():
                input_ids, attention_mask, label_mask = pack_pairs([(prompt, label)])
                summed, n_tokens = reference(model(input_ids=input_ids, attention_mask=attention_mask).logits,
                                             input_ids, label_mask)
            want_sum = summed.item()
            want_mean = want_sum / n_tokens.item()
            got_sum = call(prompt, label, False)
            described = f"prompt ids {prompt}, label ids {label}"
            if abs(got_sum - want_sum) > 1e-3:
                mistake = None
                for kind, value in variants(prompt, label).items():
                    if abs(got_sum - value) < 1e-3:
                        mistake = kind
                hints = {
                    "own position": "you read the logits at the label tokens' own positions; the logits at "
                                    "position i predict token i + 1, so label token t is scored by the logits one "
                                    "position earlier (the first label token by the prompt's last position)",
                    "prompt too": "you summed the log-probabilities of the prompt's tokens too; only the label's "
                                  "tokens count",
                    "no log_softmax": "you summed raw logits; take log_softmax over the vocabulary first, so that "
                                      "scores are log-probabilities",
                    "softmax": "you summed probabilities; sum log-probabilities (log_softmax), so that the score "
                               "is log p(label | prompt)",
                }
                hint = hints.get(mistake, "expected the sum over the label's tokens of log_softmax(logits) at the "
                                          "position before each token")
                _fail(name, f"with length_normalise=False, {described}: expected {want_sum:.4f}, got "
                            f"{got_sum:.4f}: {hint}")
            got_mean = call(prompt, label, True)
            if abs(got_mean - want_mean) > 1e-3:
                if abs(got_mean - want_sum) < 1e-3 and len(label) > 1:
                    hint = "length_normalise=True should divide the sum by the number of label tokens"
                else:
                    hint = "with length_normalise=True, divide the summed log-likelihood by the label's length"
                _fail(name, f"{described}: expected {want_mean:.4f}, got {got_mean:.4f}: {hint}")
        if call([5, 9, 2], [7, 8], False) > 0:
            _fail(name, "a log-likelihood cannot be positive")
    print(f"{name}: all checks passed")
