"""In-context learning as meta-learning: a transformer meta-trained to learn from the examples in its input.

Derived in 08_in_context_learning. Garg, Tsipras, Liang and Valiant, "What Can Transformers Learn
In-Context? A Case Study of Simple Function Classes", NeurIPS 2022, arXiv:2208.01066.

A task is a function ``f``; its examples are pairs ``(x_i, f(x_i))``. The learner is a GPT-2
architecture (built from a ``transformers`` config, never downloaded) that reads the sequence
``x_1, y_1, ..., x_{i-1}, y_{i-1}, x_i`` and predicts ``y_i``. Meta-training minimises, over tasks,

    L(theta) = E_f E_x [ 1/n sum_{i=1..n} (M_theta(x_1, y_1, ..., x_i) - f(x_i))^2 ],

the loss at every prefix length, so one model learns from 0 to ``n - 1`` examples. There is no
inner loop and no gradient step at test time: adaptation is the forward pass over the context.

Two task families:

* linear regression (tasks from :class:`course_lib.data.regression.LinearRegressionTasks`, the learner
  :class:`InContextRegressor`), Garg et al.'s main case, compared with least squares, ridge regression and k-nearest neighbours on the same
  prefixes (:func:`least_squares_predictions`, :func:`ridge_predictions`, :func:`knn_predictions`,
  :func:`normalised_error`);
* N-way classification episodes of vectors (e.g. frozen sentence embeddings), one token per
  example (:class:`InContextClassifier`, :func:`build_sequence`, :func:`classification_loss`), meta-trained on
  episodes whose inputs a random signed permutation transforms (:class:`SignedPermutationEpisodes`, Kirsch et al.
  2022), so that it cannot memorise the meta-train classes.

Task diversity (Raventós et al. 2023): a model meta-trained on a pool of ``K`` regression tasks is compared with
the two Bayes predictors, for the pool (:func:`discrete_posterior_mean_predictions`) and for the Gaussian prior
of all tasks (:func:`gaussian_posterior_mean_predictions`).

Measured on 2 CPU cores (3-layer, width-64 GPT-2, batch 64, Adam 1e-3): d=3 with 7 points learns
in about 100 s (normalised error 0.27 with 3 examples in context, 0.10 with 6, against 1.0 with
none); d=5 with 11 points was still on its initial loss plateau after 2,000 steps. Garg et al. use
12 layers of width 256 and a curriculum over ``d`` and ``n``; this module has no curriculum.

Example::

    from functools import partial
    from course_lib.data.regression import LinearRegressionTasks
    tasks = LinearRegressionTasks(dim=3, n_points=7)
    model = InContextRegressor(dim=3, n_points=7)
    history = train(model, regression_loss, partial(tasks.sample_batch, 64), TrainConfig(steps=2000))
    batch = tasks.sample_batch(1000, torch.Generator().manual_seed(1))
    with torch.no_grad():
        curve = normalised_error(model(batch.x, batch.y), batch.y, dim=3)   # [7], error per context size
    baseline = normalised_error(least_squares_predictions(batch), batch.y, dim=3)
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import GPT2Config, GPT2Model

from ..attention import shared_prefix_attention
from ..data.batches import Episode, RegressionBatch
from ..data.samplers import TaskSampler
from ..evaluate import predicting


def gpt2_backbone(n_positions: int, n_layer: int, n_embd: int, n_head: int,
                  initializer_range: float = 0.02) -> GPT2Model:
    """A randomly initialised GPT-2 (causal self-attention, learned position embeddings), built locally.

    Inputs go in as ``inputs_embeds`` ``[B, T, n_embd]``, so the token embedding table is never
    used: ``vocab_size=1`` keeps it from holding GPT-2's 50,257 rows (and no token ids are set). Dropout
    is 0 everywhere. ``initializer_range``: the standard deviation of the initial weights (GPT-2's 0.02).
    """
    config = GPT2Config(n_positions=n_positions, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                        vocab_size=1, bos_token_id=None, eos_token_id=None, initializer_range=initializer_range,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
    return GPT2Model(config)


# ---------------------------------------------------------------- linear regression in context

def regression_sequence(x: Tensor, y: Tensor) -> Tensor:
    """The tokens ``x_1, y_1, x_2, y_2, ..., x_n, y_n``: ``x [B, n, d]``, ``y [B, n]`` -> ``[B, 2n, d+1]``.

    Each token has ``d + 1`` slots: an x token is ``(x_i, 0)``, a y token is ``(0, ..., 0, y_i)``, so
    the two kinds never share a slot. (Garg et al. use ``d`` slots and put ``y_i`` in the first one,
    ``(y_i, 0, ..., 0)``, leaving the position to tell an x token from a y token.)
    """
    x_tokens = F.pad(x, (0, 1))                                             # [B, n, d+1]
    y_tokens = F.pad(y.unsqueeze(-1), (x.shape[-1], 0))                     # [B, n, d+1]
    return torch.stack([x_tokens, y_tokens], dim=2).flatten(1, 2)           # [B, 2n, d+1]


class InContextRegressor(nn.Module):
    """Garg et al.'s in-context learner: read-in, GPT-2, read-out at every x token.

    ``forward(x [B, n, d], y [B, n]) -> [B, n]``: prediction ``i`` is the read-out of GPT-2's output
    at token ``x_i``, which causal attention lets see ``x_1, y_1, ..., x_{i-1}, y_{i-1}, x_i`` only.
    ``n`` may be anything up to ``n_points`` (the sequence has ``2 n_points`` positions). The default
    size, 3 layers of width 64, is the one measured on 2 CPU cores (module docstring).
    """

    def __init__(self, dim: int, n_points: int, n_layer: int = 3, n_embd: int = 64, n_head: int = 4):
        super().__init__()
        self.dim, self.n_points = dim, n_points
        self.read_in = nn.Linear(dim + 1, n_embd)
        self.backbone = gpt2_backbone(2 * n_points, n_layer, n_embd, n_head)
        self.read_out = nn.Linear(n_embd, 1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape[1] > self.n_points:
            raise ValueError(f"{x.shape[1]} points given; this model was built for at most {self.n_points}")
        tokens = self.read_in(regression_sequence(x, y))                     # [B, 2n, n_embd]
        hidden = self.backbone(inputs_embeds=tokens).last_hidden_state       # [B, 2n, n_embd]
        return self.read_out(hidden[:, ::2]).squeeze(-1)                     # at x_1 .. x_n: [B, n]


def normalised_error(predictions: Tensor, y: Tensor, dim: int) -> Tensor:
    """Squared error per position, averaged over the batch, divided by ``dim``: ``[B, n]`` -> ``[n]``.

    ``dim`` is ``Var(y)`` of noiseless :class:`~course_lib.data.regression.LinearRegressionTasks`, so
    predicting 0 scores 1.
    """
    return (predictions.float() - y.float()).pow(2).mean(dim=0) / dim


def regression_loss(model: InContextRegressor, batch: RegressionBatch) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean squared error over every position (every prefix length) and the normalised error at the last.

    Use it as ``train(model, regression_loss, partial(tasks.sample_batch, batch_size), config)``.
    """
    predictions = model(batch.x, batch.y).float()
    loss = F.mse_loss(predictions, batch.y)
    last = normalised_error(predictions.detach(), batch.y, batch.x.shape[-1])[-1]
    return loss, {"normalised_error_last": last}


def prefix_predictions(batch: RegressionBatch, fit_and_predict: Callable[[Tensor, Tensor, Tensor], Tensor],
                       from_empty: bool = False) -> Tensor:
    """A baseline's predictions ``[B, n]``: position ``i`` from the ``i`` points before it, 0 with none.

    ``fit_and_predict(x_prefix [B, i, d], y_prefix [B, i], x_query [B, d]) -> [B]``. With ``from_empty`` it
    also predicts position 0, from the empty prefix (``i = 0``): a Bayes predictor's prior mean, which is 0
    only for a prior centred at 0.
    """
    x, y = batch.x, batch.y
    columns = [] if from_empty else [torch.zeros_like(y[:, 0])]
    columns += [fit_and_predict(x[:, :i], y[:, :i], x[:, i]) for i in range(1 - from_empty, x.shape[1])]
    return torch.stack(columns, dim=1)


def least_squares_predictions(batch: RegressionBatch) -> Tensor:
    """Least squares on each prefix: ``w_hat = pinv(X) y``, the minimum-norm solution when the prefix
    has fewer than ``d`` points; prediction ``w_hat . x_i``. ``[B, n]``. Bayes-optimal without noise."""
    def fit_and_predict(x_prefix: Tensor, y_prefix: Tensor, x_query: Tensor) -> Tensor:
        w = torch.linalg.pinv(x_prefix) @ y_prefix.unsqueeze(-1)             # [B, d, 1]
        return (x_query.unsqueeze(1) @ w).flatten()
    return prefix_predictions(batch, fit_and_predict)


def ridge_predictions(batch: RegressionBatch, lam: float) -> Tensor:
    """Ridge regression on each prefix: ``w_hat = (X^T X + lam I)^-1 X^T y``; prediction ``w_hat . x_i``. ``[B, n]``.

    ``lam -> 0`` gives the minimum-norm least squares solution, ``lam -> inf`` predicts 0. With noise of
    variance ``s^2`` and ``w ~ N(0, I)``, ``lam = s^2`` is the Bayes-optimal (posterior mean) predictor.
    """
    def fit_and_predict(x_prefix: Tensor, y_prefix: Tensor, x_query: Tensor) -> Tensor:
        gram = x_prefix.transpose(-2, -1) @ x_prefix                          # [B, d, d]
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        w = torch.linalg.solve(gram + lam * eye, x_prefix.transpose(-2, -1) @ y_prefix.unsqueeze(-1))
        return (x_query.unsqueeze(1) @ w).flatten()
    return prefix_predictions(batch, fit_and_predict)


def gaussian_posterior_mean_predictions(batch: RegressionBatch, noise_std: float, prior_std: float = 1.0) -> Tensor:
    """The Bayes predictor for ``w ~ N(0, prior_std^2 I)`` and noise ``N(0, noise_std^2)``: ``[B, n]``.

    The posterior mean of ``w`` given a prefix is ridge regression with ``lam = noise_std^2 / prior_std^2``
    (:func:`ridge_predictions`); without noise (``lam = 0``) it is the minimum-norm least squares solution
    (:func:`least_squares_predictions`), the limit ``lam -> 0``. For
    :class:`~course_lib.data.regression.LinearRegressionTasks` without a pool, ``prior_std = 1`` and
    ``noise_std`` is the tasks' own: the best any learner can do on them (Raventós et al.'s "ridge").
    """
    lam = (noise_std / prior_std) ** 2
    return least_squares_predictions(batch) if lam == 0 else ridge_predictions(batch, lam)


def discrete_posterior_mean_predictions(batch: RegressionBatch, pool: Tensor, noise_std: float) -> Tensor:
    """The Bayes predictor for ``w`` uniform over a finite ``pool [K, d]`` (Raventós et al.'s dMMSE): ``[B, n]``.

    Given a prefix ``(X, y)`` of ``i`` points the posterior of pool vector ``w_k`` is
    ``p_k ∝ exp(-||y - X w_k||^2 / (2 noise_std^2))``, and the prediction is ``sum_k p_k w_k . x_i``; with an
    empty prefix, the pool's mean ``w`` (so position 0 is predicted too). ``noise_std = 0`` is the limit:
    the posterior is uniform over the pool vectors that fit the prefix best (within ``1e-6`` relative), so
    one noiseless point that only one pool vector fits names it. The best a learner can do on tasks drawn
    from the pool (``LinearRegressionTasks(pool_size=K).pool``), and far from it on new tasks.
    """
    pool = pool.to(batch.x.dtype)

    def fit_and_predict(x_prefix: Tensor, y_prefix: Tensor, x_query: Tensor) -> Tensor:
        fitted = torch.einsum("bid,kd->bki", x_prefix, pool)                  # [B, K, i]
        sse = (y_prefix.unsqueeze(1) - fitted).pow(2).sum(dim=-1)             # [B, K]
        if noise_std > 0:
            posterior = torch.softmax(-sse / (2 * noise_std ** 2), dim=1)
        else:
            best = sse.min(dim=1, keepdim=True).values
            fits = (sse <= best + 1e-6 * (1 + best)).to(sse.dtype)
            posterior = fits / fits.sum(dim=1, keepdim=True)
        return torch.einsum("bk,kd,bd->b", posterior, pool, x_query)
    return prefix_predictions(batch, fit_and_predict, from_empty=True)


def knn_predictions(batch: RegressionBatch, k: int) -> Tensor:
    """k-nearest neighbours on each prefix: the mean ``y`` of the ``min(k, i)`` earlier points nearest
    to ``x_i`` (Euclidean distance). ``[B, n]``."""
    def fit_and_predict(x_prefix: Tensor, y_prefix: Tensor, x_query: Tensor) -> Tensor:
        distances = (x_prefix - x_query.unsqueeze(1)).pow(2).sum(dim=-1)     # [B, i]
        nearest = distances.topk(min(k, distances.shape[1]), dim=1, largest=False).indices
        return y_prefix.gather(1, nearest).mean(dim=1)
    return prefix_predictions(batch, fit_and_predict)


# ---------------------------------------------------------------- classification in context

def build_sequence(support_x: Tensor, support_y: Tensor, query_x: Tensor, unknown_label: int) -> tuple[Tensor, Tensor]:
    """The in-context sequences of a batch of episodes: one sequence per query.

    Args:
        support_x: ``[B, S, D]``, support_y: ``[B, S]`` (labels ``0 .. N-1``), query_x: ``[B, Q, D]``.
        unknown_label: the label id the query token carries (``N``: "to be predicted").

    Returns ``(inputs [B*Q, S+1, D], labels [B*Q, S+1])``: sequence ``b*Q + q`` is the support set of
    episode ``b`` followed by its query ``q``; the last label is ``unknown_label`` in every sequence, so
    the query token holds no label information. Each query gets its own sequence (the support is
    repeated ``Q`` times), so queries cannot inform each other, as in a non-transductive evaluation.
    """
    n_queries = query_x.shape[1]
    inputs = torch.cat([support_x.repeat_interleave(n_queries, dim=0), query_x.flatten(0, 1).unsqueeze(1)], dim=1)
    unknown = torch.full((inputs.shape[0], 1), unknown_label, dtype=support_y.dtype, device=support_y.device)
    labels = torch.cat([support_y.repeat_interleave(n_queries, dim=0), unknown], dim=1)
    return inputs, labels


class InContextClassifier(nn.Module):
    """N-way classification in context: one token per example, GPT-2, logits at each query's token.

    Token of an example: ``W (input_scale * x) + b + E[label]`` with a learned label embedding ``E``
    of ``n_way + 1`` rows (the last one, "unknown", for the queries). ``forward(support_x [B, S, D],
    support_y [B, S], query_x [B, Q, D]) -> logits [B, Q, n_way]``; ``S`` at most ``max_support``.

    What it computes is :func:`build_sequence`'s: each query read after the support set in a sequence of its own,
    so queries cannot inform each other (not transductive). It computes it in one pass of ``S + Q`` tokens per
    episode: the support, then every query, with an attention mask that lets each query see the support and
    itself, never another query, and gives every query the position ``S``
    (:func:`course_lib.attention.shared_prefix_attention`); ``Q`` sequences of ``S + 1`` tokens would repeat the
    support's work ``Q`` times. (tests/test_icl.py checks the two give the same logits.)

    ``input_scale`` matters. Unit-length sentence embeddings (384 coordinates of about 0.05) come out
    of the freshly initialised read-in with a norm near 0.2, while a label embedding (``N(0, 1)``
    entries) has a norm near ``sqrt(n_embd)``: the label signal drowns the input signal. Measured on
    intent episodes with labels reassigned in every episode: at ``input_scale=1`` the loss stayed at
    ``ln 5`` and accuracy at chance; with ``input_scale=20`` training loss fell to 0.01 and held-out
    accuracy reached 78%. (Two tokens per example, x then y, also stayed at chance.) Episodes whose inputs a
    random signed permutation transforms (:class:`SignedPermutationEpisodes`) start harder and need the width
    and the initialisation too (08, measured on the validation domain): the attention compares the query with
    the support examples through ``n_embd / n_head``-dimensional projections of inputs whose coordinates are
    permuted at random, so each head's comparison is that of a random projection, and a wider head compares more
    exactly; ``initializer_range`` 0.1 (GPT-2: 0.02) leaves the loss plateau at ``ln 5`` sooner.
    """

    def __init__(self, input_dim: int, n_way: int, max_support: int, n_layer: int = 3, n_embd: int = 64,
                 n_head: int = 4, input_scale: float = 1.0, initializer_range: float = 0.02):
        super().__init__()
        self.n_way, self.max_support, self.input_scale = n_way, max_support, input_scale
        self.read_in = nn.Linear(input_dim, n_embd)
        self.label_embedding = nn.Embedding(n_way + 1, n_embd)
        self.backbone = gpt2_backbone(max_support + 1, n_layer, n_embd, n_head, initializer_range)
        self.read_out = nn.Linear(n_embd, n_way)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        (batch, n_support), n_queries = support_y.shape, query_x.shape[1]
        if n_support > self.max_support:
            raise ValueError(f"{n_support} support examples given; this model was built for "
                             f"at most {self.max_support}")
        unknown = torch.full((batch, n_queries), self.n_way, dtype=support_y.dtype, device=support_y.device)
        inputs, labels = torch.cat([support_x, query_x], dim=1), torch.cat([support_y, unknown], dim=1)
        tokens = self.read_in(self.input_scale * inputs) + self.label_embedding(labels)   # [B, S+Q, n_embd]
        mask, positions = shared_prefix_attention(n_support, n_queries, 1, tokens.dtype)
        hidden = self.backbone(inputs_embeds=tokens,
                               attention_mask=mask.to(tokens.device).expand(batch, 1, -1, -1),
                               position_ids=positions.to(tokens.device).expand(batch, -1)).last_hidden_state
        return self.read_out(hidden[:, n_support:])                                       # [B, Q, n_way]


def random_signed_permutation(dim: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random signed permutation of ``dim`` coordinates: ``(permutation [dim], signs [dim])``, signs ``±1``.

    It is the orthogonal matrix ``P`` with ``P x = signs * x[permutation]``: lengths, dot products, cosine
    similarities and Euclidean distances are unchanged, so ProtoNet's predictions are too. Drawn on the CPU
    from ``generator`` only.
    """
    permutation = torch.randperm(dim, generator=generator)
    signs = torch.randint(2, (dim,), generator=generator) * 2 - 1
    return permutation, signs


def signed_permutation(episode: Episode, permutation: Tensor, signs: Tensor) -> Episode:
    """The episode with every input mapped by the same signed permutation, ``x -> signs * x[..., permutation]``:
    ``support_x [..., S, D]`` and ``query_x [..., Q, D]`` alike; labels and ``task`` unchanged."""
    dim = episode.support_x.shape[-1]
    if len(permutation) != dim or len(signs) != dim:
        raise ValueError(f"a signed permutation of {len(permutation)} coordinates for inputs of {dim}")
    permutation, signs = permutation.to(episode.support_x.device), signs.to(episode.support_x)

    def transform(x: Tensor) -> Tensor:
        return x[..., permutation] * signs
    return Episode(transform(episode.support_x), episode.support_y, transform(episode.query_x), episode.query_y,
                   episode.task)


class SignedPermutationEpisodes(TaskSampler[Episode]):
    """The episodes of ``sampler``, each with its inputs transformed by a random signed permutation (Kirsch et al.).

    Kirsch, Harrison, Sohl-Dickstein, Metz, "General-Purpose In-Context Learning by Meta-Learning
    Transformers", 2022, arXiv:2212.04458: a random linear map of the inputs per task multiplies the number of
    tasks, so a sequence model can no longer memorise the meta-train classes (an intent's embedding looks
    different in every episode) and must learn to use its context. Here the map is a signed permutation of
    the ``dim`` coordinates (:func:`random_signed_permutation`), the same for the support and the query set of
    an episode. ``n_transforms=None``: a fresh one for every episode, drawn from the ``generator`` of
    ``sample``; else one of a pool of ``n_transforms`` drawn once from ``seed``, picked by the generator (the
    number of distinct transforms, swept in 08). Every draw comes from the generators, so a seed fixes it.
    """

    def __init__(self, sampler: TaskSampler[Episode], dim: int, n_transforms: int | None = None, seed: int = 0):
        if n_transforms is not None and n_transforms < 1:
            raise ValueError(f"n_transforms must be at least 1 (or None for a fresh transform per episode), "
                             f"got {n_transforms}")
        self.sampler, self.dim, self.n_transforms = sampler, dim, n_transforms
        pool_generator = torch.Generator().manual_seed(seed)
        self.pool = (None if n_transforms is None else
                     [random_signed_permutation(dim, pool_generator) for _ in range(n_transforms)])

    def transform(self, episode: Episode, generator: torch.Generator) -> Episode:
        """``episode`` with its inputs transformed by one draw: a fresh signed permutation, or one of the pool.
        Applied to fixed test episodes, it scores a model on inputs distributed as in its training."""
        if self.pool is None:
            permutation, signs = random_signed_permutation(self.dim, generator)
        else:
            permutation, signs = self.pool[int(torch.randint(len(self.pool), (1,), generator=generator))]
        return signed_permutation(episode, permutation, signs)

    def sample(self, generator: torch.Generator) -> Episode:
        return self.transform(self.sampler.sample(generator), generator)


def relabel(batch: Episode, n_way: int, generator: torch.Generator | None = None) -> Episode:
    """Give each episode's classes new labels: a random permutation ``pi`` of ``0 .. N-1`` per episode,
    label ``c`` becomes ``pi(c)`` in the support and the query set alike (and ``task``, the class of
    each label ``[B, N]``, is permuted to match).

    The permutations are drawn on the CPU from ``generator``, or from torch's global random state
    without one: then the same seed gives the same labels on every device.
    """
    permutations = torch.rand(batch.support_y.shape[0], n_way, generator=generator).argsort(dim=1)
    permutations = permutations.to(batch.support_y.device)                  # [B, N], pi(c) = permutations[b, c]
    task = torch.empty_like(batch.task).scatter_(1, permutations.to(batch.task.device), batch.task)
    return Episode(batch.support_x, permutations.gather(1, batch.support_y), batch.query_x,
                   permutations.gather(1, batch.query_y), task)


def classification_loss(model: nn.Module, batch: Episode,
                        relabel_episodes: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean query cross-entropy over a meta-batch of episodes of vectors, and the query accuracy.

    ``batch``: an :class:`Episode` with ``support_x: [B, S, D]``, ``support_y: [B, S]``, ``query_x:
    [B, Q, D]``, ``query_y: [B, Q]``. ``model``: an :class:`InContextClassifier`, or a
    :class:`~course_lib.meta.black_box.BlackBoxClassifier`, which embeds episodes of images (``support_x:
    [B, S, C, H, W]``) first and trains end to end with this loss. With ``relabel_episodes`` the labels are reassigned at random in
    every episode (:func:`relabel`), so no class keeps a label across episodes and only the context
    can say which label a query has. :class:`~course_lib.data.episodes.EpisodeSampler` already labels an
    episode's classes in random order, so on its episodes relabelling changes nothing; it matters for
    episodes labelled in a fixed order (the exercise's clusters), and a run that keeps the labels of
    :class:`~course_lib.data.episodes.FixedLabelEpisodeSampler` passes ``relabel_episodes=False``. The permutations come from torch's global random state, which
    :func:`course_lib.train.train` seeds from ``config.seed`` and saves in its checkpoints: a run is
    reproducible and resumes exactly, like the batches drawn from its generator.
    """
    if relabel_episodes:
        batch = relabel(batch, model.n_way)
    logits = model(batch.support_x, batch.support_y, batch.query_x).float()
    loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
    accuracy = (logits.argmax(dim=-1) == batch.query_y).float().mean()
    return loss, {"accuracy": accuracy}


@torch.no_grad()
def classification_predict(model: InContextClassifier, episode: Episode) -> Tensor:
    """Query logits ``[Q, N]`` for ONE episode (``support_x: [S, D]``), labels as given, for
    ``evaluate_episodes(functools.partial(classification_predict, model), episodes)``."""
    with predicting(model, episode) as episode, torch.no_grad():
        return model(episode.support_x[None], episode.support_y[None], episode.query_x[None])[0]
