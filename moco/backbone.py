"""ResNet backbones without their classifier, ghost batch norm, and the GeM retrieval descriptor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from moco.config import STEMS  # cifar: 3x3 stride-1 first conv and no max-pool (small images keep their detail)

FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048}  # at the standard base width of 64 channels
BASE_WIDTH = 64  # channels of the first stage; later stages double it


OUTPUT_STRIDE = {"imagenet": 32, "cifar": 8}  # input side / side of the last (layer4) feature map


def last_map_side(stem: str, side: int) -> int:
    """Side of the last feature map for a side x side input (each stride-2 layer rounds up)."""
    return -(-side // OUTPUT_STRIDE[stem])


def feature_dim(arch: str, width: int = BASE_WIDTH) -> int:
    """Channels of the last feature map (the retrieval descriptor's size) for `arch` at base `width`."""
    return FEATURE_DIMS[arch] * width // BASE_WIDTH


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics are computed over `num_splits` disjoint groups of the batch.

    On one device this stands in for per-GPU BN: combined with a shuffled key batch the query and key
    of a pair never share BN statistics (the "BN cheat" of the MoCo paper, section 3.3). The state
    dict is that of a plain BatchNorm2d; in eval mode it is one.
    """

    def __init__(self, num_features: int, num_splits: int = 1) -> None:
        super().__init__(num_features)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        G = self.num_splits
        if not self.training or G == 1:
            return super().forward(x)
        N, C, H, W = x.shape
        if N % G != 0:
            raise ValueError(f"batch of {N} does not split into {G} BN groups")
        # group g is samples g*N/G ... (g+1)*N/G - 1: a slice along N, contiguous in either memory format
        # (channels_last too), so each group runs the native BN kernel with no transposes
        n = N // G
        momentum = self.momentum if self.momentum is not None else 0.1
        means = [self.running_mean.clone() for _ in range(G)]
        variances = [self.running_var.clone() for _ in range(G)]
        out = torch.cat(
            [
                F.batch_norm(
                    x[g * n : (g + 1) * n], means[g], variances[g], self.weight, self.bias, True, momentum, self.eps
                )
                for g in range(G)
            ]
        )
        with torch.no_grad():
            self.running_mean.copy_(torch.stack(means).mean(dim=0))
            self.running_var.copy_(torch.stack(variances).mean(dim=0))
            self.num_batches_tracked.add_(1)
        return out


def gem(x: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling over the spatial dims: (N, C, H, W) -> (N, C)."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def build_backbone(arch: str, bn_splits: int = 1, stem: str = "imagenet", width: int = BASE_WIDTH) -> nn.Module:
    """A torchvision ResNet with its avgpool and fc replaced by identities: returns the last feature map.

    stem "cifar" replaces the 7x7 stride-2 conv and the max-pool by one 3x3 stride-1 conv (the CIFAR recipe of
    the MoCo demo): the feature map is 4x wider and taller, 32 px in gives 4x4 out. `width` narrows (or widens)
    every stage; the state dict keeps torchvision's names, so the standard width still loads torchvision and
    MoCo weights."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}: choose one of {', '.join(STEMS)}")
    if width < 8 or width % 8:
        raise ValueError(f"Illegal width {width}: must be a positive multiple of 8")
    norm_layer = (lambda c: SplitBatchNorm(c, bn_splits)) if bn_splits > 1 else nn.BatchNorm2d
    net = getattr(torchvision.models, arch)(weights=None, norm_layer=norm_layer)
    if width != BASE_WIDTH or stem == "cifar":
        _rebuild(net, stem, width, norm_layer)
    net.avgpool = nn.Identity()
    net.fc = nn.Identity()
    return _FeatureMap(net)


def _rebuild(net: torchvision.models.ResNet, stem: str, width: int, norm_layer: type | object) -> None:
    """Replace the stem and the four stages of a torchvision ResNet in place, with torchvision's own layer
    builder and weight initialisation (so names and init match the standard network)."""
    block = type(net.layer1[0])
    depths = [len(layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = norm_layer(width)
    net.inplanes = width
    net.layer1 = net._make_layer(block, width, depths[0])
    net.layer2 = net._make_layer(block, width * 2, depths[1], stride=2)
    net.layer3 = net._make_layer(block, width * 4, depths[2], stride=2)
    net.layer4 = net._make_layer(block, width * 8, depths[3], stride=2)
    for m in net.modules():  # torchvision's ResNet initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class _FeatureMap(nn.Module):
    """Wraps a torchvision ResNet so that forward returns the layer4 feature map (N, C, h, w)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps(x)[-1]

    def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer3 and layer4 feature maps: (N, C/2, 2h, 2w), (N, C, h, w)."""
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        f3 = n.layer3(n.layer2(n.layer1(x)))
        return f3, n.layer4(f3)


POOLED = ("layer4", "layer3+layer4")  # feature maps the retrieval descriptor pools


def pooled_dim(arch: str, width: int = BASE_WIDTH, pooled: str = "layer4") -> int:
    """The descriptor's size: layer4's channels, plus layer3's (half as many) with "layer3+layer4"."""
    c = feature_dim(arch, width)
    return c + c // 2 if pooled == "layer3+layer4" else c


class RetrievalEncoder(nn.Module):
    """Backbone + GeM pooling: the exported encoder. forward(x) -> (N, C) descriptor, not normalised.

    pooled "layer3+layer4": the GeM of layer3 and of layer4, each L2-normalised, side by side (N, C/2 + C): the
    middle layer's finer, less augmentation-invariant features weigh as much as the last layer's."""

    def __init__(
        self, arch: str, gem_p: float = 3.0, stem: str = "imagenet", width: int = BASE_WIDTH, pooled: str = "layer4"
    ) -> None:
        super().__init__()
        if pooled not in POOLED:
            raise ValueError(f"unknown pooled {pooled!r}: choose one of {', '.join(POOLED)}")
        self.backbone = build_backbone(arch, stem=stem, width=width)
        self.gem_p = gem_p
        self.pooled = pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooled == "layer4":
            return gem(self.backbone(x), self.gem_p)  # (N, C)
        f3, f4 = self.backbone.maps(x)  # (N, C/2, 2h, 2w), (N, C, h, w)
        return torch.cat([F.normalize(gem(f3, self.gem_p), dim=1), F.normalize(gem(f4, self.gem_p), dim=1)], dim=1)
