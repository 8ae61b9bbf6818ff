"""MAML's meta-gradient is right: against higher, finite differences, and between its own code paths."""
import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from course_lib.data.base import ClassDataset
from course_lib.course.cost import peak_saved_megabytes
from course_lib.data.episodes import Episode, EpisodeSampler
from course_lib.data.sinusoid import SinusoidTasks
from course_lib.meta import maml_higher
from course_lib.meta.maml import MAML
from course_lib.models import MLP, ConvNet


def image_tasks(meta_batch_size=3, n_way=3, k_shot=2, n_query=2, size=12):
    images = torch.rand(8, 6, 1, size, size, generator=torch.Generator().manual_seed(0))
    sampler = EpisodeSampler(ClassDataset(images, [str(i) for i in range(8)], "random"), n_way, k_shot, n_query)
    return sampler.sample_batch(meta_batch_size, torch.Generator().manual_seed(1))


def small_convnet(n_way=3, explicit_batch_norm=False):
    torch.manual_seed(0)
    return ConvNet(hidden=4, n_blocks=2, n_classes=n_way, image_size=12, explicit_batch_norm=explicit_batch_norm).double()


def meta_gradient(model, loss_fn, batch):
    model.zero_grad()
    loss_fn(batch).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def relative_difference(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_second_order_meta_gradient_matches_higher():
    batch = image_tasks()
    batch = batch.__class__(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y, batch.task)
    net = small_convnet()
    maml = MAML(net, inner_lr=0.4, inner_steps=2)
    ours = meta_gradient(net, lambda b: maml.meta_loss(b)[0], batch)
    theirs = meta_gradient(net, lambda b: maml_higher.meta_loss(net, b, inner_lr=0.4, inner_steps=2), batch)
    assert relative_difference(ours, theirs) < 1e-5


def test_second_order_meta_gradient_matches_finite_differences():
    torch.manual_seed(0)
    net = MLP().double()
    batch = SinusoidTasks(k_shot=5, n_query=5).sample_batch(2, torch.Generator().manual_seed(0))
    batch = batch.__class__(*(t.double() for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y)), batch.task)
    maml = MAML(net, inner_lr=0.01, inner_steps=2, task_loss=F.mse_loss)
    gradient = meta_gradient(net, lambda b: maml.meta_loss(b)[0], batch)
    direction = torch.randn(gradient.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    params = {name: p.detach() for name, p in net.named_parameters()}

    def meta_loss_at(step):
        shifted, offset = {}, 0
        for name, p in params.items():
            shifted[name] = (p + step * direction[offset:offset + p.numel()].view_as(p)).requires_grad_()
            offset += p.numel()
        total = 0.0
        for task in range(2):
            fast = dict(shifted)
            for _ in range(2):
                loss = F.mse_loss(functional_call(net, fast, (batch.support_x[task],)), batch.support_y[task])
                grads = torch.autograd.grad(loss, list(fast.values()))
                fast = {n: w - 0.01 * g for (n, w), g in zip(fast.items(), grads)}
            total += F.mse_loss(functional_call(net, fast, (batch.query_x[task],)), batch.query_y[task]).item()
        return total / 2

    eps = 1e-5
    finite_difference = (meta_loss_at(eps) - meta_loss_at(-eps)) / (2 * eps)
    assert finite_difference == pytest.approx((gradient @ direction).item(), rel=1e-6)


@pytest.mark.parametrize("variant", [
    dict(), dict(first_order=True), dict(adapt_head_only=True), dict(first_order=True, adapt_head_only=True),
    dict(meta_sgd=True), dict(inner_steps=3)])
def test_batched_vmap_path_equals_per_task_loop(variant):
    batch = image_tasks()
    batch = batch.__class__(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y, batch.task)
    net = small_convnet(explicit_batch_norm=True)
    options = {"inner_lr": 0.4, "inner_steps": 1, **variant}
    loop, batched = MAML(net, **options), MAML(net, batched=True, **options)
    if variant.get("meta_sgd"):
        batched.inner_lrs = loop.inner_lrs
    params = list(loop.parameters())
    grads = []
    for maml in (loop, batched):
        maml.zero_grad()
        maml.meta_loss(batch)[0].backward()
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    assert relative_difference(grads[1], grads[0]) < 1e-10


def test_explicit_batch_norm_equals_the_built_in_layer_and_is_required_under_vmap():
    batch = image_tasks()
    batch = batch.__class__(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y, batch.task)
    built_in, explicit = small_convnet(), small_convnet(explicit_batch_norm=True)
    explicit.load_state_dict(built_in.state_dict())
    assert torch.allclose(built_in(batch.query_x[0]), explicit(batch.query_x[0]), atol=1e-12)
    grads = [meta_gradient(net, lambda b: MAML(net).meta_loss(b)[0], batch) for net in (built_in, explicit)]
    assert relative_difference(grads[1], grads[0]) < 1e-10

    with pytest.raises(ValueError, match="explicit batch norm"):
        MAML(built_in, batched=True)
    # The reason for the guard: vmap's rule for the built-in layer drops part of the second-order
    # gradient (torch 2.13). If this assertion starts to fail, torch fixed it and the guard can go.
    unguarded = MAML(built_in)
    unguarded.batched = True
    vmapped = meta_gradient(built_in, lambda b: unguarded.meta_loss(b)[0], batch)
    assert relative_difference(vmapped, grads[0]) > 1e-4


def test_first_order_drops_the_hessian_term():
    batch = image_tasks()
    batch = batch.__class__(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y, batch.task)
    net = small_convnet()
    second = meta_gradient(net, lambda b: MAML(net, inner_lr=0.4).meta_loss(b)[0], batch)
    first = meta_gradient(net, lambda b: MAML(net, inner_lr=0.4, first_order=True).meta_loss(b)[0], batch)
    assert relative_difference(first, second) > 1e-3, "the Hessian term matters at this step size"

    # First order = the query-loss gradient taken at the adapted weights, averaged over tasks.
    maml = MAML(net, inner_lr=0.4, first_order=True)
    expected = 0
    for task in range(3):
        fast = {n: w.detach().requires_grad_() for n, w in maml.adapt(batch.support_x[task], batch.support_y[task]).items()}
        loss = F.cross_entropy(functional_call(net, fast, (batch.query_x[task],)), batch.query_y[task])
        expected = expected + torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(fast.values()))]) / 3
    assert relative_difference(first, expected) < 1e-10


def test_first_order_reports_the_query_loss_and_holds_one_task_at_a_time():
    batch = image_tasks(meta_batch_size=4)
    net = small_convnet().float()
    first, second = MAML(net, inner_lr=0.4, first_order=True), MAML(net, inner_lr=0.4)
    loss, metrics = first.meta_loss(batch)
    query_losses = [F.cross_entropy(functional_call(net, first.adapt(batch.support_x[t], batch.support_y[t]),
                                                    (batch.query_x[t],)), batch.query_y[t]).item() for t in range(4)]
    assert loss.item() == pytest.approx(sum(query_losses) / 4, rel=1e-6)
    assert 0 <= metrics["accuracy"] <= 1

    def held(learner, tasks):
        return peak_saved_megabytes(lambda: learner.meta_loss(batch[:tasks]))
    assert held(first, 4) < 1.5 * held(first, 1), "first order frees each task's graph"
    assert held(second, 4) > 3 * held(second, 1), "second order keeps every task's graph for the outer backward"


def test_anil_adapts_only_the_head_and_meta_sgd_learns_step_sizes():
    batch = image_tasks()
    net = small_convnet().float()
    anil = MAML(net, adapt_head_only=True)
    fast = anil.adapt(batch.support_x[0], batch.support_y[0])
    changed = {n for n, p in net.named_parameters() if not torch.equal(fast[n], p)}
    assert changed == {"head.weight", "head.bias"}

    meta_sgd = MAML(net, meta_sgd=True)
    meta_sgd.meta_loss(batch)[0].backward()
    assert all(lr.grad is not None and lr.grad.abs().sum() > 0 for lr in meta_sgd.inner_lrs)
    with pytest.raises(ValueError, match="no trainable parameter of the network is selected"):
        MAML(net, adapt_head_only=True, head_prefix="classifier.")
    with pytest.raises(ValueError, match="eval_inner_lr=0.1 would be ignored"):
        MAML(net, meta_sgd=True, eval_inner_lr=0.1)


def test_predict_adapts_without_touching_the_model():
    batch = image_tasks()
    net = small_convnet().float()
    before = [p.clone() for p in net.parameters()]
    maml = MAML(net, inner_lr=0.4, eval_inner_steps=3)
    episode = batch[0]
    logits = maml.predict(episode)
    assert logits.shape == (6, 3) and not logits.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())
    unadapted = MAML(net, eval_inner_steps=0).predict(episode)
    assert not torch.allclose(logits, unadapted), "three inner steps must change the predictions"


def other_queries_replaced(episode, keep):
    """The episode with every query but the first ``keep`` replaced by other images (and labels kept)."""
    others = torch.rand(episode.query_x[keep:].shape, generator=torch.Generator().manual_seed(7),
                        dtype=episode.query_x.dtype)
    return Episode(episode.support_x, episode.support_y, torch.cat([episode.query_x[:keep], others]),
                   episode.query_y, episode.task)


def test_non_transductive_predict_ignores_the_other_queries():
    episode = image_tasks(n_query=3)[0]
    maml = MAML(small_convnet().float(), inner_lr=0.4, eval_inner_steps=3, transductive=False)
    logits = maml.predict(episode)
    changed = other_queries_replaced(episode, keep=2)
    assert torch.allclose(maml.predict(changed)[:2], logits[:2], atol=1e-6), "a query must not see the others"
    # ... it is the query's row of a pass over [support set; that query] at the adapted weights ...
    fast_weights = maml.adapt(episode.support_x, episode.support_y, training=False)
    with torch.no_grad():
        alone = functional_call(maml.net, fast_weights, (torch.cat([episode.support_x, episode.query_x[:1]]),))
    assert torch.allclose(logits[0], alone[-1], atol=1e-6)
    # ... whereas the default, transductive prediction changes with the other queries.
    maml.transductive = True
    assert not torch.allclose(maml.predict(changed)[:2], maml.predict(episode)[:2])
    # Without batch norm, both are one pass and the same.
    sine = SinusoidTasks(k_shot=5, n_query=5).sample_batch(1, torch.Generator().manual_seed(0))[0]
    torch.manual_seed(0)
    mlp = MAML(MLP(), inner_lr=0.01, task_loss=F.mse_loss, transductive=False)
    assert torch.equal(mlp.predict(sine), MAML(mlp.net, inner_lr=0.01, task_loss=F.mse_loss).predict(sine))


def test_higher_trap_copy_initial_weights_loses_the_meta_gradient():
    import higher

    batch = image_tasks()
    net = small_convnet().float()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.4)
    with higher.innerloop_ctx(net, optimizer) as (fast_net, diff_optimizer):  # default copy_initial_weights=True
        diff_optimizer.step(F.cross_entropy(fast_net(batch.support_x[0]), batch.support_y[0]))
        F.cross_entropy(fast_net(batch.query_x[0]), batch.query_y[0]).backward()
    assert all(p.grad is None for p in net.parameters())


def test_predict_runs_in_eval_mode_and_restores_every_mode():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 40), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(40, 1))
    net[0].eval()                                   # a mixed state, to be restored as it was
    episode = SinusoidTasks(k_shot=10, n_query=10).sample_batch(1, torch.Generator().manual_seed(0))[0]
    maml = MAML(net, inner_lr=0.01, eval_inner_steps=3, task_loss=F.mse_loss)
    modes = [m.training for m in maml.modules()]
    first, second = maml.predict(episode), maml.predict(episode)
    assert torch.equal(first, second), "dropout must be off while adapting and scoring at test time"
    assert [m.training for m in maml.modules()] == modes
    adapted = [maml.adapt(episode.support_x, episode.support_y, training=False)["0.weight"] for _ in range(2)]
    assert not torch.equal(*adapted), "in training mode dropout is on (the check above could fail)"
