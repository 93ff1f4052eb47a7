"""Models timm does not ship, registered in timm's own registry so `timm.create_model` builds them.

timm has no CIFAR-scale convnet: its ResNet stem (7x7 stride-2 conv + max-pool) turns a 32 px image into
8x8 before the first stage. The usual CIFAR adaptation (He et al. 2016, Sec. 4.2) keeps timm's ResNet and
blocks and swaps only the stem for a 3x3 stride-1 conv without pooling; that is all this file does.
"""

from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

# No published weights exist for these; the cfg only tells timm's data helpers the input size and stats.
default_cfgs = generate_default_cfgs({
    "cifar_resnet10": {"input_size": (3, 32, 32), "pool_size": (4, 4), "num_classes": 10,
                      "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)},
})


def _cifar_resnet(name: str, pretrained: bool, **kwargs) -> ResNet:
    kwargs.setdefault("num_classes", 10)
    model = build_model_with_cfg(ResNet, name, pretrained, **kwargs)
    stem_width = model.bn1.num_features
    model.conv1 = nn.Conv2d(3, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@register_model
def cifar_resnet10(pretrained: bool = False, **kwargs) -> ResNet:
    """Small CIFAR ResNet-10 (4 stages of one BasicBlock, 32-256 channels, 32 px -> 4 px): the CIFAR-scale teacher."""
    args = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=32)
    return _cifar_resnet("cifar_resnet10", pretrained, **dict(args, **kwargs))
