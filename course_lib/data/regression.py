"""Linear regression tasks: the function class that a transformer learns to regress in context (08).

Garg, Tsipras, Liang and Valiant, "What Can Transformers Learn In-Context? A Case Study of Simple
Function Classes", NeurIPS 2022, arXiv:2208.01066. A task is a weight vector ``w``; its examples are
``n_points`` pairs ``(x_i, y_i = w . x_i + eps_i)``.
"""
from __future__ import annotations

import torch

from .batches import RegressionBatch
from .samplers import TaskSampler, check_batch_size


class LinearRegressionTasks(TaskSampler[RegressionBatch]):
    """Garg et al.'s linear functions: per task ``w ~ N(0, I_d)``; its ``n_points`` inputs
    ``x_i ~ N(0, I_d)`` and outputs ``y_i = w . x_i + eps_i``, ``eps_i ~ N(0, noise_std^2)``.

    Without noise ``Var(y_i) = E||w||^2 = d``: predicting 0 has normalised error 1
    (:func:`course_lib.meta.icl.normalised_error`).

    ``pool_size``: draw ``w`` from a fixed pool of ``pool_size`` vectors (drawn once from ``N(0, I_d)`` with
    ``pool_seed``, kept in ``self.pool: [pool_size, d]``) instead of a fresh one per task: the low task
    diversity of Raventos et al. 2023 (arXiv:2306.15063), where a transformer memorises the pool instead of
    learning to regress in context (08_in_context_learning, section 4). Inputs and noise stay fresh.

    ``sample_batch`` is vectorised: it draws every ``x`` of the batch, then every ``w``, then every
    ``eps``, so it is fast for batches of thousands, and a batch of ``B`` is NOT ``B`` stacked calls of
    ``sample`` with the same generator (``sample`` is the batch of one, ``sample_batch(1, g)[0]``).
    """

    def __init__(self, dim: int, n_points: int, noise_std: float = 0.0, pool_size: int | None = None,
                 pool_seed: int = 0):
        if dim < 1 or n_points < 1:
            raise ValueError(f"dim and n_points must be at least 1, got {dim} and {n_points}")
        if pool_size is not None and pool_size < 1:
            raise ValueError(f"pool_size must be at least 1 (or None for a fresh w per task), got {pool_size}")
        self.dim, self.n_points, self.noise_std = dim, n_points, noise_std
        self.pool = (None if pool_size is None else
                     torch.randn(pool_size, dim, generator=torch.Generator().manual_seed(pool_seed)))

    def sample(self, generator: torch.Generator) -> RegressionBatch:
        """One task: ``x: [n, d]``, ``w: [d]``, ``y: [n]``."""
        return self.sample_batch(1, generator)[0]

    def sample_batch(self, n: int, generator: torch.Generator) -> RegressionBatch:
        """``n`` tasks, ``x: [n, n_points, d]``, ``w: [n, d]``, ``y: [n, n_points]``, drawn vectorised."""
        check_batch_size(n)
        x = torch.randn(n, self.n_points, self.dim, generator=generator)
        if self.pool is None:
            w = torch.randn(n, self.dim, generator=generator)
        else:
            w = self.pool[torch.randint(len(self.pool), (n,), generator=generator)]
        noise = torch.randn(n, self.n_points, generator=generator)
        y = torch.einsum("bnd,bd->bn", x, w) + self.noise_std * noise
        return RegressionBatch(x, w, y)
