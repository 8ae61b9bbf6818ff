"""The networks of the MAML and ProtoNet papers (the conv net with ProtoNet's max-pooling).

Introduced in 01_few_shot_problem (conv net) and 03_maml (MLP). Both are plain modules whose
parameters can be swapped for others with ``torch.func.functional_call``: that is how MAML
evaluates a network at adapted weights without touching the module's own parameters.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class ExplicitBatchNorm2d(nn.Module):
    """Batch norm with batch statistics, written out: ``(x - mean) / sqrt(var + eps) * weight + bias``.

    Statistics over ``[B, H, W]`` per channel of ``x: [B, C, H, W]``. It computes what
    ``nn.BatchNorm2d(track_running_stats=False)`` computes (same parameter names), about 1.7x
    slower on a CPU, but its second-order gradients stay right under ``torch.func.vmap``, where
    the built-in layer's are wrong (tests/test_maml.py shows both). Used by MAML's batched path.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


class PerStepBatchNorm2d(nn.Module):
    """Batch norm with a weight, a bias and running statistics of its own for each inner-loop step (MAML++).

    Antoniou, Edwards, Storkey, "How to train your MAML", ICLR 2019, arXiv:1810.09502, per-step batch norm
    weights and biases and per-step running statistics. In MAML's inner loop the fast weights ``phi_t`` change
    at every step, so the features they produce have other statistics at every step; one ``gamma, beta`` and one
    set of running statistics for all steps fit none of them. This layer keeps ``n_steps`` of each: the pass
    at the weights of step ``t`` (set with :func:`set_inner_step`; ``t = 0`` is ``theta``) computes

        y = (x - mu) / sqrt(var + eps) * weight[t] + bias[t]           x: [B, C, H, W], weight, bias: [n_steps, C]

    with ``mu, var`` per channel over ``[B, H, W]``:
      * in training, the batch's; the running statistics of step ``t`` move towards them,
        ``running[t] <- (1 - momentum) running[t] + momentum * batch`` (variance unbiased, as ``nn.BatchNorm2d``);
      * in eval mode, the running statistics of step ``t``: each image is normalised on its own, so predicting
        many queries in one pass is not transductive; with ``batch_statistics_in_eval`` the batch's again, without
        updating (transductive). MAML++'s official code (AntreasAntoniou/HowToTrainYourMAMLPytorch) collects
        the per-step running statistics but normalises with the batch's in every pass
        (``F.batch_norm(..., training=True)``): that is ``batch_statistics_in_eval=True``.
    The running statistics are updated in place, which ``torch.func.vmap`` over tasks cannot do.
    """

    def __init__(self, num_features: int, n_steps: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.eps, self.momentum, self.step, self.batch_statistics_in_eval = eps, momentum, 0, False
        self.weight = nn.Parameter(torch.ones(n_steps, num_features))
        self.bias = nn.Parameter(torch.zeros(n_steps, num_features))
        self.register_buffer("running_mean", torch.zeros(n_steps, num_features))
        self.register_buffer("running_var", torch.ones(n_steps, num_features))

    @property
    def n_steps(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.weight[self.step], self.bias[self.step]
        if self.training:
            return F.batch_norm(x, self.running_mean[self.step], self.running_var[self.step], weight, bias,
                                training=True, momentum=self.momentum, eps=self.eps)
        if self.batch_statistics_in_eval:
            return F.batch_norm(x, None, None, weight, bias, training=True, eps=self.eps)
        return F.batch_norm(x, self.running_mean[self.step], self.running_var[self.step], weight, bias,
                            training=False, eps=self.eps)


def per_step_norms(net: nn.Module) -> dict[str, PerStepBatchNorm2d]:
    """Every :class:`PerStepBatchNorm2d` of ``net``, by module name."""
    return {name: module for name, module in net.named_modules() if isinstance(module, PerStepBatchNorm2d)}


def set_inner_step(net: nn.Module, step: int) -> None:
    """Make every :class:`PerStepBatchNorm2d` of ``net`` use the weight, bias and statistics of inner step ``step``."""
    for module in per_step_norms(net).values():
        if not 0 <= step < module.n_steps:
            raise ValueError(f"inner step {step} asked of a per-step batch norm built for {module.n_steps} "
                             f"steps (0 .. {module.n_steps - 1})")
        module.step = step


def set_batch_statistics_in_eval(net: nn.Module, on: bool) -> None:
    """Make every :class:`PerStepBatchNorm2d` of ``net`` normalise with batch statistics in eval mode (``on``,
    transductive, as MAML++'s official code) or with its per-step running statistics (not transductive)."""
    for module in per_step_norms(net).values():
        module.batch_statistics_in_eval = on


class MaxPool2x2(nn.Module):
    """2x2 max-pooling, stride 2: ``[B, C, H, W] -> [B, C, H // 2, W // 2]`` (an odd last row or column is
    dropped), the values of ``nn.MaxPool2d(2)``.

    ``y[i, j] = max(x[2i, 2j], x[2i, 2j + 1], x[2i + 1, 2j], x[2i + 1, 2j + 1])``. Where no gradient is
    needed on a CPU (every prediction: the query pass, one query at a time) it is computed as two
    element-wise maxima of strided views, the same numbers about ten times faster than ``F.max_pool2d``,
    whose kernel for this memory layout also records each window's argmax for a backward pass and took
    as long as the convolutions. Otherwise it is ``F.max_pool2d``, whose backward pass sends each
    window's gradient to one maximum.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad or x.device.type != "cpu":
            return F.max_pool2d(x, 2)
        height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        rows = torch.maximum(x[..., 0:height:2, :width], x[..., 1:height:2, :width])   # [B, C, H // 2, W']
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def conv_block(in_channels: int, out_channels: int, explicit_batch_norm: bool = False,
               batch_norm_steps: int | None = None) -> nn.Sequential:
    """3x3 conv (padding 1) -> batch norm -> ReLU -> 2x2 max-pool: halves height and width.

    The layers run as conv, batch norm, max-pool, ReLU: the same function and the same gradients, bit
    for bit (``relu(max(a, b, c, d)) = max(relu(a), ..., relu(d))``, ReLU being monotone), with the ReLU
    and its backward on a quarter of the pixels (the forward pass about 15% faster on a CPU).

    Batch norm keeps no running statistics (``track_running_stats=False``): it normalises with
    the statistics of the batch at hand in training *and* at test time, as MAML's code does,
    so a task's support set is normalised by itself and no buffers change during adaptation.
    Predicting a whole query set in one batch is then transductive (each query's prediction
    depends on the others); ProtoNet's code instead evaluates with running statistics.
    ``batch_norm_steps``: MAML++'s :class:`PerStepBatchNorm2d` with that many steps instead.
    """
    if batch_norm_steps is not None:
        norm = PerStepBatchNorm2d(out_channels, batch_norm_steps)
    else:
        norm = (ExplicitBatchNorm2d(out_channels) if explicit_batch_norm
                else nn.BatchNorm2d(out_channels, track_running_stats=False))
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        norm,
        MaxPool2x2(),
        nn.ReLU(),
    )


class ConvNet(nn.Module):
    """The 4-block conv net of Vinyals et al. 2016 and ProtoNet (Snell et al. 2017), used by every method.

    Each block: 3x3 conv, batch norm, ReLU, 2x2 max-pool. MAML (Finn et al. 2017) uses the same
    blocks (32 filters) for Mini-ImageNet, but for Omniglot strided convolutions instead of max-pooling
    (cbfinn/maml, ``--max_pool=False``), as does Reptile's official Omniglot model.

    Input ``[B, in_channels, 28, 28]``; four blocks map 28 -> 14 -> 7 -> 3 -> 1 pixels, so the
    embedding has ``hidden`` features. With ``n_classes`` a linear head gives logits
    ``[B, n_classes]``; without it the network returns the embedding ``[B, hidden]`` (ProtoNet).
    ``explicit_batch_norm`` selects :class:`ExplicitBatchNorm2d` (for MAML under ``vmap``);
    ``batch_norm_steps`` selects :class:`PerStepBatchNorm2d` (MAML++: ``inner_steps + 1`` of them).

    ``ConvNet().to(memory_format=torch.channels_last)`` stores the convolutions' weights channels-last, so that
    every activation keeps a pixel's channels side by side: the same function, about twice as fast on a CPU
    (batch norm and max-pooling of the 28x28 block, most of the time in the default layout, then vectorise
    along the channels; notebook 05 uses it). PyTorch's channels-last batch norm on a CPU sums its statistics
    less precisely: float32 outputs agree with the default layout to about 1e-3 (relative), not 1e-6.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, n_blocks: int = 4,
                 n_classes: int | None = None, image_size: int = 28, explicit_batch_norm: bool = False,
                 batch_norm_steps: int | None = None):
        super().__init__()
        channels = [in_channels] + [hidden] * n_blocks
        self.features = nn.Sequential(*(conv_block(a, b, explicit_batch_norm, batch_norm_steps)
                                        for a, b in zip(channels, channels[1:])))
        side = image_size
        for _ in range(n_blocks):
            side //= 2
        self.embedding_dim = hidden * side * side
        self.head = nn.Linear(self.embedding_dim, n_classes) if n_classes else nn.Identity()

    def embed(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, embedding_dim]``."""
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


class MLP(nn.Module):
    """The 1-40-40-1 ReLU network of MAML's sinusoid experiment: ``[B, 1]`` -> ``[B, 1]``."""

    def __init__(self, sizes: tuple[int, ...] = (1, 40, 40, 1)):
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
