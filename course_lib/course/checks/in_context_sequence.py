"""Checkers of exercise set 08_in_context_sequence: the in-context sequences for regression and classification.

Each checker calls the learner's function on known cases under a time limit and raises
``AssertionError`` with a message that names the mistake, or prints what passed.
"""
from __future__ import annotations

from typing import Callable

import torch

from ...data.episodes import Episode
from .base import time_limit, _fail


def _tokens_text(tokens: torch.Tensor) -> str:
    return str([[round(v, 2) for v in row] for row in tokens.tolist()])


def check_regression_sequence(regression_sequence: Callable, seconds: float = 10) -> None:
    """Check ``regression_sequence(x [B, n, d], y [B, n]) -> [B, 2n, d+1]``, the tokens
    ``(x_1, 0), (0, y_1), (x_2, 0), (0, y_2), ...`` of :func:`course_lib.meta.icl.regression_sequence`."""
    from ...meta.icl import regression_sequence as reference

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
    from ...meta.icl import build_sequence

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
