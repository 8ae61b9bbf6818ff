"""The networks of the MAML and ProtoNet papers.

Introduced in 01_few_shot_problem (conv net) and 03_maml (MLP). Both are plain modules whose
parameters can be swapped for others with ``torch.func.functional_call``: that is how MAML
evaluates a network at adapted weights without touching the module's own parameters.
"""
from __future__ import annotations

from torch import Tensor, nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (padding 1) -> batch norm -> ReLU -> 2x2 max-pool: halves height and width.

    Batch norm keeps no running statistics (``track_running_stats=False``): it normalises with
    the statistics of the batch at hand in training *and* at test time, as in the MAML paper,
    so a task's support set is normalised by itself and no buffers change during adaptation.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels, track_running_stats=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class ConvNet(nn.Module):
    """The 4-block conv net of MAML (Finn et al. 2017) and ProtoNet (Snell et al. 2017).

    Input ``[B, in_channels, 28, 28]``; four blocks map 28 -> 14 -> 7 -> 3 -> 1 pixels, so the
    embedding has ``hidden`` features. With ``n_classes`` a linear head gives logits
    ``[B, n_classes]``; without it the network returns the embedding ``[B, hidden]`` (ProtoNet).
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, n_blocks: int = 4,
                 n_classes: int | None = None, image_size: int = 28):
        super().__init__()
        channels = [in_channels] + [hidden] * n_blocks
        self.features = nn.Sequential(*(conv_block(a, b) for a, b in zip(channels, channels[1:])))
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
