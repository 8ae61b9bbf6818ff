"""Checkers of exercise set 07_pooling_and_lora_step: mean pooling and one LoRA inner step.

Each checker calls the learner's function on known cases under a time limit and raises
``AssertionError`` with a message that names the mistake, or prints what passed.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import time_limit, _fail, _fail_naming_the_mistake


def check_mean_pool(mean_pool: Callable, seconds: float = 10) -> None:
    """Check ``mean_pool(token_embeddings [B, T, D], attention_mask [B, T]) -> [B, D]``."""
    from ...text.encoder import mean_pool as reference

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
    from ...text.lora import is_fast_weight

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


def check_lora_factors(lora_factors: Callable, seconds: float = 10) -> None:
    """Check ``lora_factors(base: nn.Linear, rank) -> (A [rank, d_in], B [d_out, rank])``: LoRA's starting factors,
    ``A`` random (small: entries of order ``1 / sqrt(d_in)`` or less) and ``B`` zeros, new tensors (Hu et al. 2021)."""
    name = "lora_factors"
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 4)
    before = [p.detach().clone() for p in base.parameters()]
    with time_limit(seconds, name):
        got = lora_factors(base, 2)
        if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)):
            _fail(name, "should return a tuple (A, B) of tensors")
        A, B = got
        if tuple(A.shape) != (2, 6) or tuple(B.shape) != (4, 2):
            _fail(name, f"A should be [rank, in_features] = [2, 6] and B [out_features, rank] = [4, 2], got "
                        f"{tuple(A.shape)} and {tuple(B.shape)}")
        if B.abs().sum() != 0:
            _fail(name, "start B at zero, so that the adapted layer equals the pretrained one at first")
        if A.abs().sum() == 0:
            _fail(name, "start A random, not at zero: with A = 0 and B = 0 both gradients are zero and nothing trains")
        if A.abs().max() > 3:
            _fail(name, "A's entries are too large: scale them like a layer's initial weights, e.g. randn / sqrt(d_in)")
        if any(not torch.equal(p, q) for p, q in zip(base.parameters(), before)):
            _fail(name, "the pretrained layer was changed: leave base as it is")
    print(f"{name}: all checks passed")


class _Projection(torch.nn.Module):
    """One linear layer named like an attention projection, for peft to wrap."""

    def __init__(self, base: torch.nn.Linear):
        super().__init__()
        self.query = base

    def forward(self, x):
        return self.query(x)


def check_lora_forward(lora_forward: Callable, seconds: float = 20) -> None:
    """Check ``lora_forward(x [..., d_in], base: nn.Linear, A [r, d_in], B [d_out, r], alpha) -> [..., d_out]``:
    ``base(x) + (alpha / r) * x A^T B^T`` (Hu et al. 2021), compared with ``peft``'s LoRA layer holding the same
    ``A`` and ``B``."""
    import copy

    from peft import LoraConfig, get_peft_model

    name = "lora_forward"
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 4)
    rank, alpha = 2, 8.0
    x = torch.randn(3, 5, 6)      # a batch of sequences: [batch, tokens, d_in]
    A, B = 0.5 * torch.randn(rank, 6), 0.5 * torch.randn(4, rank)
    peft_model = get_peft_model(_Projection(copy.deepcopy(base)),
                                LoraConfig(r=rank, lora_alpha=alpha, target_modules=["query"], lora_dropout=0.0))
    layer = peft_model.base_model.model.query
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(A)
        layer.lora_B["default"].weight.copy_(B)
        want = peft_model(x)
        lora = x @ A.T @ B.T
        hints = [(base(x) + alpha * lora, "the scale is alpha / rank, not alpha"),
                 (base(x) + rank / alpha * lora, "the scale is alpha / rank, not rank / alpha"),
                 (base(x) + lora, "multiply the low-rank term by alpha / rank"),
                 (alpha / rank * lora, "add the pretrained layer's output base(x)")]
    with time_limit(seconds, name), torch.no_grad():
        got = lora_forward(x, base, A, B, alpha)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (3, 5, 4):
            _fail(name, f"for x of shape [3, 5, 6] the output should be [3, 5, 4], got "
                        f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        if not torch.allclose(got, want, atol=1e-5):
            _fail_naming_the_mistake(name, lambda wrong: torch.allclose(got, wrong, atol=1e-5), hints,
                                     "expected base(x) + (alpha / rank) * x A^T B^T, as peft's LoRA layer computes")
        if not torch.allclose(lora_forward(x, base, A, torch.zeros_like(B), alpha), base(x), atol=1e-6):
            _fail(name, "with B = 0 the output should be base(x)")
    print(f"{name}: all checks passed (the same output as peft's LoRA layer)")
