"""The exercise checkers accept correct solutions and name the typical mistakes."""
import pytest
import torch
from torch.nn import functional as F

from course_lib.course.checks.base import PartialCredit
from course_lib.course.checks.episodes_and_ci import check_confidence_interval, check_episode_sampler, check_nearest_neighbour
from course_lib.data.episodes import Episode, EpisodeSampler
from course_lib.evaluate import mean_confidence_interval
from course_lib.meta import transfer


def reference_sampler(dataset, n_way, k_shot, n_query, generator):
    return EpisodeSampler(dataset, n_way, k_shot, n_query).sample(generator)


def sorted_labels_sampler(dataset, n_way, k_shot, n_query, generator):
    episode = reference_sampler(dataset, n_way, k_shot, n_query, generator)
    order = episode.task.argsort().argsort()  # relabel so label 0 is the smallest class
    return Episode(episode.support_x, order[episode.support_y], episode.query_x, order[episode.query_y],
                   episode.task.sort().values)


def overlapping_sampler(dataset, n_way, k_shot, n_query, generator):
    episode = reference_sampler(dataset, n_way, k_shot, n_query, generator)
    query_x = episode.query_x.clone()
    query_x[0] = episode.support_x[0]
    return Episode(episode.support_x, episode.support_y, query_x, episode.query_y, episode.task)


def test_correct_solutions_pass(capsys):
    check_episode_sampler(reference_sampler)
    check_confidence_interval(mean_confidence_interval)
    check_nearest_neighbour(lambda e: e.support_y[torch.cdist(e.query_x.flatten(1), e.support_x.flatten(1)).argmin(1)])
    assert capsys.readouterr().out.count("all checks passed") == 3


@pytest.mark.parametrize("sampler, message", [
    (sorted_labels_sampler, "assign labels in random order"),
    (overlapping_sampler, "must be disjoint"),
    (lambda d, n, k, q, g: reference_sampler(d, n, k, q, torch.Generator().manual_seed(5)), "hardly vary"),
])
def test_sampler_mistakes_are_named(sampler, message):
    with pytest.raises(AssertionError, match=message):
        check_episode_sampler(sampler)


def _t_half_width(v, divide_by):
    from scipy import stats
    return stats.t.ppf(0.975, len(v) - 1) * v.double().std().item() / divide_by


@pytest.mark.parametrize("interval, message", [
    (lambda v: (v.mean().item(), 1.959964 * v.std().item() / len(v) ** 0.5), "normal quantile"),
    (lambda v: (v.mean().item(), 2 * mean_confidence_interval(v)[1]), "not the full width"),
    (lambda v: (v.mean().item(), _t_half_width(v, 1)), "forgot to divide by sqrt\\(n\\)"),
    (lambda v: (v.mean().item(), _t_half_width(v, len(v))), "you divided by n"),
    (lambda v: (v.mean().item(), mean_confidence_interval(v)[1] * ((len(v) - 1) / len(v)) ** 0.5), "divide by n-1"),
    (lambda v: v.mean().item(), "should return a tuple"),
])
def test_interval_mistakes_are_named(interval, message):
    with pytest.raises(AssertionError, match=message):
        check_confidence_interval(interval)


def test_forgetting_sqrt_n_is_not_called_the_full_width_and_earns_half():
    # With n = 4, sqrt(n) = 2: the half-width without it equals the full width; the 600-value case decides.
    with pytest.raises(PartialCredit) as raised:
        check_confidence_interval(lambda v: (v.mean().item(), _t_half_width(v, 1)))
    assert raised.value.fraction == 0.5 and "full width" not in str(raised.value)


def test_sampler_with_repeats_or_its_own_randomness_is_named():
    def with_replacement(dataset, n_way, k_shot, n_query, generator):
        episode = reference_sampler(dataset, n_way, k_shot, n_query, generator)
        return Episode(episode.support_x[[0] * len(episode.support_x)].clone() * 0 + episode.support_x[:1],
                       episode.support_y, episode.query_x, episode.query_y, episode.task)

    def own_randomness(dataset, n_way, k_shot, n_query, generator):
        return reference_sampler(dataset, n_way, k_shot, n_query, torch.Generator().manual_seed(
            int(torch.randint(0, 2 ** 30, (1,)))))
    with pytest.raises(AssertionError, match="appears twice"):
        check_episode_sampler(with_replacement)
    with pytest.raises(AssertionError, match="same generator seed gave a different episode"):
        check_episode_sampler(own_randomness)


def test_nearest_neighbour_without_flattening_is_named():
    def unflattened(e):
        if e.query_x.dim() > 2:
            return torch.zeros(len(e.query_x), dtype=torch.long)
        return e.support_y[torch.cdist(e.query_x, e.support_x).argmin(1)]
    with pytest.raises(AssertionError, match="flattened to vectors"):
        check_nearest_neighbour(unflattened)


def test_the_euclidean_distance_hint_reaches_the_end_of_its_message():
    from course_lib.course.checks.prototypes_and_distances import check_squared_euclidean
    with pytest.raises(AssertionError) as raised:
        check_squared_euclidean(torch.cdist)
    assert str(raised.value).endswith("you returned the Euclidean distance (torch.cdist, or a square root); "
                                      "ProtoNet uses its square ||a_i - b_j||^2: that is what makes it a "
                                      "linear classifier")


def test_nearest_neighbour_index_instead_of_label_is_named():
    def returns_index(e):
        return torch.cdist(e.query_x.flatten(1), e.support_x.flatten(1)).argmin(1)
    with pytest.raises(AssertionError, match="support \\*label\\*"):
        check_nearest_neighbour(returns_index)


def test_endless_student_code_is_stopped():
    def endless(*args):
        while True:
            pass
    with pytest.raises(AssertionError, match="took longer than 0.5 s"):
        check_episode_sampler(endless, seconds=0.5)


def reference_inner_update(net, params, support_x, support_y, inner_lr, loss_fn, create_graph):
    support_loss = loss_fn(torch.func.functional_call(net, params, (support_x,)), support_y)
    grads = torch.autograd.grad(support_loss, list(params.values()), create_graph=create_graph)
    return {name: p - inner_lr * g for (name, p), g in zip(params.items(), grads)}


def reference_maml_meta_loss(net, batch, inner_lr, inner_steps, loss_fn, first_order=False):
    losses = []
    for task in range(batch.support_x.shape[0]):
        fast = dict(net.named_parameters())
        for _ in range(inner_steps):
            fast = reference_inner_update(net, fast, batch.support_x[task], batch.support_y[task], inner_lr,
                                          loss_fn, not first_order)
        losses.append(loss_fn(torch.func.functional_call(net, fast, (batch.query_x[task],)), batch.query_y[task]))
    return torch.stack(losses).mean()


def test_maml_checkers_accept_the_reference():
    from course_lib.course.checks.maml_inner_and_outer import check_inner_update, check_maml_meta_loss
    check_inner_update(reference_inner_update)
    check_maml_meta_loss(reference_maml_meta_loss)


@pytest.mark.parametrize("mistake, message", [
    (lambda *a: reference_inner_update(*a[:-1], False), "Hessian term is missing"),
    (lambda net, params, x, y, lr, loss_fn, cg: {k: v.detach() for k, v in
                                                 reference_inner_update(net, params, x, y, lr, loss_fn, cg).items()},
     "cut off from the graph"),
    (lambda net, params, x, y, lr, loss_fn, cg: reference_inner_update(net, params, x, y, -lr, loss_fn, cg), "wrong sign"),
    (lambda *a: reference_inner_update(*a[:-1], True), "create_graph=False should give the first-order gradient"),
])
def test_inner_update_mistakes_are_named(mistake, message):
    from course_lib.course.checks.maml_inner_and_outer import check_inner_update
    with pytest.raises(AssertionError, match=message):
        check_inner_update(mistake)


def test_meta_loss_on_one_task_only_is_named():
    from course_lib.course.checks.maml_inner_and_outer import check_maml_meta_loss

    def first_task_only(net, batch, *args):
        return reference_maml_meta_loss(net, batch[0].__class__(*(t[:1] for t in (
            batch.support_x, batch.support_y, batch.query_x, batch.query_y)), batch.task[:1]), *args)
    with pytest.raises(AssertionError, match="first task only"):
        check_maml_meta_loss(first_task_only)


def reference_reptile_step(theta, adapted_params, outer_lr):
    return {name: p + outer_lr * (torch.stack([phi[name] for phi in adapted_params]).mean(dim=0) - p)
            for name, p in theta.items()}


def reptile_step_in_place(theta, adapted_params, outer_lr):
    for name, new in reference_reptile_step(theta, adapted_params, outer_lr).items():
        theta[name].copy_(new)
    return theta


def test_reptile_step_checker_accepts_the_reference(capsys):
    from course_lib.course.checks.reptile_step import check_reptile_step
    check_reptile_step(reference_reptile_step)
    assert "reptile_step: all checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (lambda theta, adapted, lr: reference_reptile_step(theta, adapted, -lr), "moves away"),
    (lambda theta, adapted, lr: reference_reptile_step(theta, adapted[-1:], lr), "only the last task"),
    (lambda theta, adapted, lr: reference_reptile_step(theta, adapted, lr * len(adapted)), "were summed"),
    (lambda theta, adapted, lr: reference_reptile_step(theta, adapted, 1.0), "outer_lr = 1 only"),
    (lambda theta, adapted, lr: {k: theta[k] - v for k, v in reference_reptile_step(theta, adapted, 1.0).items()},
     "pseudo-gradient"),
    (reptile_step_in_place, "changed in place"),
    (lambda theta, adapted, lr: reference_reptile_step(theta, adapted, 1 - lr), "weights are swapped"),
])
def test_reptile_step_mistakes_are_named(mistake, message):
    from course_lib.course.checks.reptile_step import check_reptile_step
    with pytest.raises(AssertionError, match=message):
        check_reptile_step(mistake)


def class_means(embeddings, labels, n_way):
    return torch.stack([embeddings[labels == k].mean(0) for k in range(n_way)])


def reference_logits(support, support_y, query, n_way):
    return -torch.cdist(query, class_means(support, support_y, n_way)) ** 2


def test_correct_protonet_solutions_pass(capsys):
    from course_lib.course.checks.prototypes_and_distances import check_protonet_logits, check_prototypes, check_squared_euclidean
    check_prototypes(class_means)
    check_squared_euclidean(lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1))
    check_squared_euclidean(lambda a, b: (a ** 2).sum(1, keepdim=True) - 2 * a @ b.T + (b ** 2).sum(1))
    check_protonet_logits(reference_logits)
    check_protonet_logits(lambda s, y, q, n: 2 * q @ class_means(s, y, n).T - (class_means(s, y, n) ** 2).sum(1))
    assert capsys.readouterr().out.count("all checks passed") == 5


@pytest.mark.parametrize("prototypes, message", [
    (lambda e, y, n: torch.stack([e[y == k].sum(0) for k in range(n)]), "you summed"),
    (lambda e, y, n: torch.stack([e[y == k].sum(0) for k in range(n)]) / (len(y) // n), "each class's own count"),
    (lambda e, y, n: e.mean(0).expand(n, -1), "mean of the whole support set"),
    (lambda e, y, n: e.view(n, -1, e.shape[-1]).mean(1), "grouped by class"),
    (lambda e, y, n: class_means(e, y, n).T, "one row per class"),
    (lambda e, y, n: torch.tensor(class_means(e, y, n).tolist()), "lost their gradient"),
])
def test_prototype_mistakes_are_named(prototypes, message):
    from course_lib.course.checks.prototypes_and_distances import check_prototypes
    with pytest.raises(AssertionError, match=message):
        check_prototypes(prototypes)


@pytest.mark.parametrize("distance, message", [
    (torch.cdist, "Euclidean distance"),
    (lambda a, b: -torch.cdist(a, b) ** 2, "minus the distance"),
    (lambda a, b: ((a[:, None] - b[None]) ** 2).mean(-1), "averaged over the D features"),
    (lambda a, b: (torch.cdist(a, b) ** 2).T, "transposed"),
    (lambda a, b: torch.tensor((torch.cdist(a, b) ** 2).tolist()), "lost their gradient"),
])
def test_distance_mistakes_are_named(distance, message):
    from course_lib.course.checks.prototypes_and_distances import check_squared_euclidean
    with pytest.raises(AssertionError, match=message):
        check_squared_euclidean(distance)


@pytest.mark.parametrize("logits, message", [
    (lambda s, y, q, n: -reference_logits(s, y, q, n), "negate them"),
    (lambda s, y, q, n: -torch.cdist(q, class_means(s, y, n)), "squared distance"),
    (lambda s, y, q, n: reference_logits(s, y, q, n).T[:, :2], "logits \\[N\\*Q, n_way\\]"),
])
def test_protonet_logit_mistakes_are_named(logits, message):
    from course_lib.course.checks.prototypes_and_distances import check_protonet_logits
    with pytest.raises(AssertionError, match=message):
        check_protonet_logits(logits)


def probe_with_random_start_and_lbfgs(support, support_y, query, n_way):
    """A correct probe written differently: nn.Linear's random start, LBFGS, no weight decay."""
    head = torch.nn.Linear(support.shape[1], n_way)
    support, query = torch.nn.functional.normalize(support, dim=-1), torch.nn.functional.normalize(query, dim=-1)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=50)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(support), support_y)
        loss.backward()
        return loss
    optimizer.step(closure)
    return head(query)


def probe_normalising_in_place(support, support_y, query, n_way):
    from course_lib.meta.transfer import linear_probe
    support /= support.norm(dim=-1, keepdim=True)
    query /= query.norm(dim=-1, keepdim=True)
    return linear_probe(support, support_y, query, n_way)


def probe_without_normalisation(support, support_y, query, n_way):
    from course_lib.meta.transfer import fit_linear_head
    weight, bias = fit_linear_head(support, support_y, n_way, steps=100, lr=0.1)
    return query @ weight.T + bias


def probe_with_whole_matrix_norm(support, support_y, query, n_way):
    return probe_without_normalisation(support / support.norm(), support_y, query / query.norm(), n_way)


def probe_assuming_sorted_support(support, support_y, query, n_way):
    from course_lib.meta.transfer import linear_probe
    sorted_labels = torch.arange(n_way).repeat_interleave(len(support_y) // n_way)
    return linear_probe(support, sorted_labels, query, n_way)


def test_linear_probe_checker_accepts_correct_probes(capsys):
    from course_lib.course.checks.linear_probe import check_linear_probe
    from course_lib.meta.transfer import linear_probe
    check_linear_probe(linear_probe)
    check_linear_probe(probe_with_random_start_and_lbfgs)
    assert capsys.readouterr().out.count("all checks passed") == 2


def reference_probe(support, support_y, query, n_way, **kwargs):
    from course_lib.meta.transfer import linear_probe
    return linear_probe(support, support_y, query, n_way, **kwargs)


@pytest.mark.parametrize("probe, message", [
    (probe_normalising_in_place, "features passed in were changed"),
    (lambda s, y, q, n: reference_probe(s, y, q, n).argmax(1), "one value per query"),
    (lambda s, y, q, n: reference_probe(s, y, q, n).T, "transposed"),
    (probe_assuming_sorted_support, "does not fit linearly separable features"),
    (lambda s, y, q, n: reference_probe(s, y, q, n, steps=0), "does not fit linearly separable features"),
    (probe_without_normalisation, "changed when the features were rescaled"),
    (probe_with_whole_matrix_norm, "changed when the other queries were left out"),
    (lambda s, y, q, n: reference_probe(s, y, q, 5), "use n_way"),
])
def test_linear_probe_mistakes_are_named(probe, message):
    from course_lib.course.checks.linear_probe import check_linear_probe
    with pytest.raises(AssertionError, match=message):
        check_linear_probe(probe)


# ---------------------------------------------------------------- 08: the in-context sequence

def _x_and_y_tokens(x, y):
    return torch.nn.functional.pad(x, (0, 1)), torch.nn.functional.pad(y[..., None], (x.shape[-1], 0))


def test_sequence_checkers_accept_the_library_and_other_correct_versions(capsys):
    from course_lib.course.checks.in_context_sequence import check_episode_sequences, check_regression_sequence
    from course_lib.meta import icl

    def by_hand(x, y):
        tokens = torch.zeros(x.shape[0], 2 * x.shape[1], x.shape[2] + 1)
        tokens[:, 0::2, :-1] = x
        tokens[:, 1::2, -1] = y
        return tokens

    check_regression_sequence(icl.regression_sequence)
    check_regression_sequence(by_hand)
    check_episode_sequences(lambda b, n: icl.build_sequence(b.support_x, b.support_y, b.query_x, n))
    assert capsys.readouterr().out.count("all checks passed") == 3


@pytest.mark.parametrize("sequence, message", [
    (lambda x, y: torch.cat([x, y[..., None]], dim=-1), "one token per example"),
    (lambda x, y: torch.stack([x, y[..., None].expand_as(x)], dim=2).flatten(1, 2), "d slots"),
    (lambda x, y: torch.stack(_x_and_y_tokens(x, y)[::-1], dim=2).flatten(1, 2), "swapped"),
    (lambda x, y: torch.cat(_x_and_y_tokens(x, y), dim=1), "interleave"),
    (lambda x, y: torch.stack([_x_and_y_tokens(x, y)[0], torch.nn.functional.pad(y[..., None], (0, x.shape[-1]))],
                              dim=2).flatten(1, 2), "first slot"),
    (lambda x, y: torch.stack([torch.nn.functional.pad(x, (1, 0)), _x_and_y_tokens(x, y)[1]], dim=2).flatten(1, 2),
     "pad on the right"),
    (lambda x, y: torch.stack(_x_and_y_tokens(x, y), dim=2).transpose(0, 1).reshape(x.shape[0], -1, x.shape[-1] + 1),
     "mixed up"),
    (lambda x, y: torch.tensor(torch.stack(_x_and_y_tokens(x, y), dim=2).flatten(1, 2).tolist()), "gradient"),
])
def test_regression_sequence_mistakes_are_named(sequence, message):
    from course_lib.course.checks.in_context_sequence import check_regression_sequence
    with pytest.raises(AssertionError, match=message):
        check_regression_sequence(sequence)


def _episode_sequences(support_x, support_y, query_x, last_labels):
    Q = query_x.shape[1]
    inputs = torch.cat([support_x.repeat_interleave(Q, dim=0), query_x.flatten(0, 1)[:, None]], dim=1)
    return inputs, torch.cat([support_y.repeat_interleave(Q, dim=0), last_labels[:, None]], dim=1)


def _unknown(b, n):
    return torch.full((b.query_x.shape[0] * b.query_x.shape[1],), n)


@pytest.mark.parametrize("sequences, message", [
    (lambda b, n: _episode_sequences(b.support_x, b.support_y, b.query_x, b.query_y.flatten()), "true label"),
    (lambda b, n: (torch.cat([b.support_x, b.query_x], 1),
                   torch.cat([b.support_y, torch.full_like(b.query_y, n)], 1)), "own sequence"),
    (lambda b, n: tuple(t.roll(1, dims=1) for t in _episode_sequences(b.support_x, b.support_y, b.query_x,
                                                                      _unknown(b, n))), "comes first"),
    (lambda b, n: _episode_sequences(b.support_x, b.support_y, b.query_x, _unknown(b, 0)), "n_way = 3"),
    (lambda b, n: (torch.cat([b.support_x.repeat(b.query_x.shape[1], 1, 1), b.query_x.flatten(0, 1)[:, None]], 1),
                   _episode_sequences(b.support_x, b.support_y, b.query_x, _unknown(b, n))[1]), "repeat_interleave"),
    (lambda b, n: _episode_sequences(b.support_x, b.support_y.sort(dim=1).values, b.query_x, _unknown(b, n)),
     "its own example"),
    (lambda b, n: _episode_sequences(b.support_x, b.support_y, b.query_x.transpose(0, 1).reshape(b.query_x.shape),
                                     _unknown(b, n)), "query-major"),
    (lambda b, n: _episode_sequences(b.support_x, b.support_y, b.query_x, _unknown(b, n))[0], "pair of tensors"),
    (lambda b, n: _episode_sequences(b.support_x, b.support_y, b.query_x, _unknown(b, n).float()), "integers"),
])
def test_episode_sequence_mistakes_are_named(sequences, message):
    from course_lib.course.checks.in_context_sequence import check_episode_sequences
    with pytest.raises(AssertionError, match=message):
        check_episode_sequences(sequences)


# ---------------------------------------------------------------- 07: mean pooling and the LoRA inner step

def _masked_mean(hidden, mask):
    mask = mask[..., None].to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def _lora_step(net, params, x, y, lr, adapted_if):
    names = [n for n in params if adapted_if(n)]
    loss = torch.nn.functional.cross_entropy(torch.func.functional_call(net, params, (x,)), y)
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    return {**params, **{n: params[n] - lr * g for n, g in zip(names, grads)}}


def test_pooling_and_lora_step_checkers_accept_the_reference(capsys):
    from course_lib.course.checks.pooling_and_lora_step import check_lora_inner_step, check_mean_pool
    check_mean_pool(_masked_mean)
    check_lora_inner_step(_lora_step)
    assert capsys.readouterr().out.count("all checks passed") == 2


@pytest.mark.parametrize("pool, message", [
    (lambda h, m: h.mean(1), "padding .mask 0. must not count"),
    (lambda h, m: (h * m[..., None]).sum(1) / h.shape[1], "divided by T"),
    (lambda h, m: (h * m[..., None]).sum(1) / m.sum(1, keepdim=True), "all-zero mask"),
])
def test_mean_pool_mistakes_are_named(pool, message):
    from course_lib.course.checks.pooling_and_lora_step import check_mean_pool
    with pytest.raises(AssertionError, match=message):
        check_mean_pool(pool)


def _step_at_module_weights(net, params, x, y, lr, adapted_if):
    own = dict(net.named_parameters())
    names = [n for n in params if adapted_if(n)]
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y), [own[n] for n in names])
    return {**params, **{n: params[n] - lr * g for n, g in zip(names, grads)}}


def _step_on_every_trainable_weight(net, params, x, y, lr, adapted_if):
    return _lora_step(net, params, x, y, lr, lambda name: params[name].requires_grad)


def _assigning_to_parameters(net, params, x, y, lr, adapted_if):
    net.parameters = list(_lora_step(net, params, x, y, lr, adapted_if).values())
    return params


@pytest.mark.parametrize("step, message", [
    (_step_at_module_weights, "functional_call"),
    (_step_on_every_trainable_weight, "scale changed"),
    (_assigning_to_parameters, "do not assign to net.parameters"),
    (lambda net, params, x, y, lr, adapted_if: _lora_step(net, params, x, y, -lr, adapted_if), "wrong sign"),
])
def test_lora_inner_step_mistakes_are_named(step, message):
    from course_lib.course.checks.pooling_and_lora_step import check_lora_inner_step
    with pytest.raises(AssertionError, match=message):
        check_lora_inner_step(step)


# ---------------------------------------------------------------- 09: label scoring by log-likelihood

def _label_scorer(offset=1, prompt_too=False, log_softmax=True, normalise=True, probabilities=False):
    """Label scoring with a switch for each typical mistake; the defaults are right."""
    def label_log_likelihood(model, prompt_ids, label_ids, length_normalise):
        ids = torch.tensor([prompt_ids + label_ids])
        logits = model(input_ids=ids).logits[0]
        scores = logits.softmax(-1) if probabilities else logits.log_softmax(-1) if log_softmax else logits
        first = 1 if prompt_too else len(prompt_ids)
        positions = torch.arange(first, ids.shape[1])
        total = scores[positions - offset, ids[0, positions]].sum()
        return total / len(label_ids) if length_normalise and normalise else total
    return label_log_likelihood


def test_label_scoring_checker_accepts_a_correct_solution(capsys):
    from course_lib.course.checks.label_scoring import check_label_log_likelihood
    check_label_log_likelihood(_label_scorer())
    assert "all checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("solution, message", [
    (_label_scorer(offset=0), "one\\s+position earlier"),
    (_label_scorer(prompt_too=True), "prompt's tokens too"),
    (_label_scorer(log_softmax=False), "take log_softmax"),
    (_label_scorer(probabilities=True), "summed probabilities"),
    (_label_scorer(normalise=False), "divide the sum by the number of label tokens"),
    (lambda model, p, c, n: torch.zeros(2, len(c)), "should return one number"),
])
def test_label_scoring_mistakes_are_named(solution, message):
    from course_lib.course.checks.label_scoring import check_label_log_likelihood
    with pytest.raises(AssertionError, match=message):
        check_label_log_likelihood(solution)


# --- the extensions of 02, 03, 04 and the set of 06 ---------------------------------------------

def reference_cosine_logits(features, weight, scale):
    return scale * F.normalize(features, dim=-1) @ F.normalize(weight, dim=-1).transpose(-2, -1)


def reference_prototype_head(embeddings, labels, n_way):
    centres = torch.stack([embeddings[labels == k].mean(0) for k in range(n_way)])
    return 2 * centres, -centres.pow(2).sum(1)


def reference_joint_gradient(theta, support_losses):
    grads = [torch.autograd.grad(loss(theta), list(theta.values())) for loss in support_losses]
    return {name: torch.stack([g[i] for g in grads]).mean(0) for i, name in enumerate(theta)}


def reference_paired_difference(a, b):
    if len(a) != len(b):
        raise ValueError("not paired")
    return mean_confidence_interval(b - a)


def test_extension_checkers_accept_the_references(capsys):
    from course_lib.course.checks.linear_probe import check_cosine_logits
    from course_lib.course.checks.maml_inner_and_outer import check_prototype_head
    from course_lib.course.checks.paired_intervals import check_paired_difference
    from course_lib.course.checks.reptile_step import check_joint_training_gradient
    check_cosine_logits(reference_cosine_logits)
    check_cosine_logits(transfer.cosine_logits)
    check_prototype_head(reference_prototype_head)
    check_joint_training_gradient(reference_joint_gradient)
    check_paired_difference(reference_paired_difference)
    assert capsys.readouterr().out.count("all checks passed") == 5


@pytest.mark.parametrize("cosine, message", [
    (lambda x, w, s: s * F.normalize(x, dim=-1) @ w.T, "normalise the class weights too"),
    (lambda x, w, s: s * x @ F.normalize(w, dim=-1).T, "normalise the features too"),
    (lambda x, w, s: s * x @ w.T, "that is a linear head"),
    (lambda x, w, s: F.normalize(x, dim=-1) @ F.normalize(w, dim=-1).T, "multiply the cosines by scale"),
    (lambda x, w, s: s * F.normalize(x, dim=0) @ F.normalize(w, dim=0).T, "each row"),
    (lambda x, w, s: reference_cosine_logits(x.div_(x.norm(dim=-1, keepdim=True)), w, s), "changed in place"),
    (lambda x, w, s: reference_cosine_logits(x, w, s)[..., :2], "should return a tensor"),
    (lambda x, w, s: s * F.normalize(x, dim=-1) @ F.normalize(w, dim=-1).T if x.dim() == 2 else x.sum(), "transpose the last two"),
])
def test_cosine_logits_mistakes_are_named(cosine, message):
    from course_lib.course.checks.linear_probe import check_cosine_logits
    with pytest.raises(AssertionError, match=message):
        check_cosine_logits(cosine)


def _sorted_prototype_head(embeddings, labels, n_way):
    centres = embeddings.reshape(n_way, -1, embeddings.shape[-1]).mean(1)
    return 2 * centres, -centres.pow(2).sum(1)


@pytest.mark.parametrize("head, message", [
    (lambda e, y, n: (reference_prototype_head(e, y, n)[0] / 2, reference_prototype_head(e, y, n)[1]), "weight is 2 c_k"),
    (lambda e, y, n: (reference_prototype_head(e, y, n)[0], -reference_prototype_head(e, y, n)[1]), "minus the squared"),
    (lambda e, y, n: (reference_prototype_head(e, y, n)[0], torch.zeros(n, dtype=e.dtype)), "bias -||c_k||^2 is needed"),
    (_sorted_prototype_head, "not sorted by label"),
    (lambda e, y, n: reference_prototype_head(e, y, n)[0], "should return a tuple"),
])
def test_prototype_head_mistakes_are_named(head, message):
    from course_lib.course.checks.maml_inner_and_outer import check_prototype_head
    with pytest.raises(AssertionError, match=message):
        check_prototype_head(head)


def _backward_joint_gradient(theta, support_losses):
    torch.stack([loss(theta) for loss in support_losses]).mean().backward()
    return {name: p.grad.clone() for name, p in theta.items()}


@pytest.mark.parametrize("gradient, message", [
    (lambda theta, losses: {k: -v for k, v in reference_joint_gradient(theta, losses).items()}, "sign is flipped"),
    (lambda theta, losses: {k: len(losses) * v for k, v in reference_joint_gradient(theta, losses).items()}, "summed"),
    (lambda theta, losses: reference_joint_gradient(theta, losses[:1]), "only the first task"),
    (lambda theta, losses: reference_joint_gradient(theta, losses[-1:]), "only the last task"),
    (_backward_joint_gradient, "use torch.autograd.grad"),
    (lambda theta, losses: list(reference_joint_gradient(theta, losses).values()), "should return a dict"),
])
def test_joint_training_gradient_mistakes_are_named(gradient, message):
    from course_lib.course.checks.reptile_step import check_joint_training_gradient
    with pytest.raises(AssertionError, match=message):
        check_joint_training_gradient(gradient)


def _interval(values, quantile, correction=1, divide=True):
    values = torch.as_tensor(values, dtype=torch.float64)
    return values.mean().item(), quantile * values.std(correction=correction).item() / (len(values) ** 0.5 if divide else 1)


def _t(n):
    from scipy import stats
    return stats.t.ppf(0.975, n - 1)


@pytest.mark.parametrize("paired, message", [
    (lambda a, b: ((b - a).mean().item(), _t(len(a)) * (a.var() / len(a) + b.var() / len(b)).sqrt().item()), "unpaired"),
    (lambda a, b: ((b - a).mean().item(), mean_confidence_interval(a)[1] + mean_confidence_interval(b)[1]),
     "adding the two methods' half-widths"),
    (lambda a, b: _interval(b - a, 1.959964), "not the normal quantile"),
    (lambda a, b: _interval(b - a, _t(len(a)), correction=0), "ddof=1"),
    (lambda a, b: _interval(b - a, _t(len(a)), divide=False), "divide the standard deviation by sqrt"),
    (lambda a, b: mean_confidence_interval(b.sort().values - a.sort().values), "do not sort"),
    (lambda a, b: mean_confidence_interval(a - b), "not a - b"),
    (lambda a, b: mean_confidence_interval(b[: min(len(a), len(b))] - a[: min(len(a), len(b))]), "different lengths"),
    (lambda a, b: (b - a).mean().item(), "should return a tuple"),
])
def test_paired_difference_mistakes_are_named(paired, message):
    from course_lib.course.checks.paired_intervals import check_paired_difference
    with pytest.raises(AssertionError, match=message):
        check_paired_difference(paired)


# --- 07 and 09: the LoRA layer by hand, MetaICL's loss, channel scoring -----------------------------

def reference_metaicl_loss(logits, input_ids, label_mask):
    token_log_probs = logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = label_mask[:, 1:]
    return -(token_log_probs * mask).sum() / mask.sum()


def reference_lora_factors(base, rank):
    return torch.randn(rank, base.in_features) / base.in_features ** 0.5, torch.zeros(base.out_features, rank)


def reference_lora_forward(x, base, A, B, alpha, scale=None):
    return base(x) + (alpha / A.shape[0] if scale is None else scale) * x @ A.T @ B.T


def reference_channel_scores(label_log_likelihood):
    from course_lib.text.prompting import build_channel_context

    def channel(model, tokenizer, demonstrations, query, label_names, normalise=True):
        text = tokenizer(" " + query)["input_ids"]
        return torch.tensor([float(label_log_likelihood(model, tokenizer(build_channel_context(demonstrations, c))["input_ids"],
                                                        text, normalise)) for c in label_names])
    return channel


def reference_label_log_likelihood(model, prompt_ids, label_ids, length_normalise):
    log_probs = model(input_ids=torch.tensor([prompt_ids + label_ids])).logits[0].log_softmax(-1)
    m = len(prompt_ids)
    total = log_probs[torch.arange(m - 1, m - 1 + len(label_ids)), torch.tensor(label_ids)].sum()
    return total / len(label_ids) if length_normalise else total


def test_lm_extension_checkers_accept_the_references(capsys):
    from course_lib.course.checks.label_scoring import check_channel_scores, check_metaicl_loss
    from course_lib.course.checks.pooling_and_lora_step import check_lora_factors, check_lora_forward
    from course_lib.meta import metaicl
    check_metaicl_loss(reference_metaicl_loss)
    check_metaicl_loss(lambda logits, ids, mask: -metaicl.label_log_likelihood(logits, ids, mask)[0].sum()
                       / metaicl.label_log_likelihood(logits, ids, mask)[1].sum())
    check_lora_factors(reference_lora_factors)
    check_lora_forward(reference_lora_forward)
    check_channel_scores(reference_channel_scores(reference_label_log_likelihood), reference_label_log_likelihood)
    assert capsys.readouterr().out.count("all checks passed") == 5


def _own_position_loss(logits, input_ids, label_mask):
    own = logits.log_softmax(-1).gather(-1, input_ids[..., None]).squeeze(-1)
    return -(own * label_mask).sum() / label_mask.sum()


@pytest.mark.parametrize("loss, message", [
    (lambda l, i, m: -reference_metaicl_loss(l, i, m), "MINUS the log-likelihood"),
    (_own_position_loss, "shift by one"),
    (lambda l, i, m: reference_metaicl_loss(l, i, torch.ones_like(m)), "only the label tokens count"),
    (lambda l, i, m: torch.stack([reference_metaicl_loss(l[b:b + 1], i[b:b + 1], m[b:b + 1]) for b in range(len(l))]).mean(),
     "not per sequence first"),
    (lambda l, i, m: reference_metaicl_loss(l, i, m) * m[:, 1:].sum(), "divide by the number of label tokens"),
    (lambda l, i, m: float(reference_metaicl_loss(l, i, m)), "should return one number as a tensor"),
])
def test_metaicl_loss_mistakes_are_named(loss, message):
    from course_lib.course.checks.label_scoring import check_metaicl_loss
    with pytest.raises(AssertionError, match=message):
        check_metaicl_loss(loss)


@pytest.mark.parametrize("factors, message", [
    (lambda base, r: (torch.randn(r, base.in_features), torch.randn(base.out_features, r)), "start B at zero"),
    (lambda base, r: (torch.zeros(r, base.in_features), torch.zeros(base.out_features, r)), "start A random"),
    (lambda base, r: (100 * torch.randn(r, base.in_features), torch.zeros(base.out_features, r)), "too large"),
    (lambda base, r: (torch.randn(base.in_features, r), torch.zeros(r, base.out_features)), "A should be"),
    (lambda base, r: torch.zeros(r, base.in_features), "should return a tuple"),
])
def test_lora_factor_mistakes_are_named(factors, message):
    from course_lib.course.checks.pooling_and_lora_step import check_lora_factors
    with pytest.raises(AssertionError, match=message):
        check_lora_factors(factors)


@pytest.mark.parametrize("forward, message", [
    (lambda x, base, A, B, a: reference_lora_forward(x, base, A, B, a, scale=a), "not alpha$"),
    (lambda x, base, A, B, a: reference_lora_forward(x, base, A, B, a, scale=A.shape[0] / a), "not rank / alpha"),
    (lambda x, base, A, B, a: reference_lora_forward(x, base, A, B, a, scale=1.0), "multiply the low-rank term"),
    (lambda x, base, A, B, a: reference_lora_forward(x, base, A, B, a) - base(x), "add the pretrained"),
    (lambda x, base, A, B, a: reference_lora_forward(x, base, A, B, a)[0], "should be \\[3, 5, 4\\]"),
])
def test_lora_forward_mistakes_are_named(forward, message):
    from course_lib.course.checks.pooling_and_lora_step import check_lora_forward
    with pytest.raises(AssertionError, match=message):
        check_lora_forward(forward)


def test_channel_mistakes_are_named():
    from course_lib.course.checks.label_scoring import check_channel_scores
    from course_lib.text.prompting import build_prompt

    def direct(model, tokenizer, demonstrations, query, label_names):
        prompt = tokenizer(build_prompt(demonstrations, query))["input_ids"]
        return [reference_label_log_likelihood(model, prompt, tokenizer(" " + c)["input_ids"], True) for c in label_names]

    unnormalised = lambda *args: reference_channel_scores(reference_label_log_likelihood)(*args, normalise=False)
    for wrong, message in [(direct, "that is the direct score"), (unnormalised, "divide each score")]:
        with pytest.raises(AssertionError, match=message):
            check_channel_scores(wrong, reference_label_log_likelihood)
