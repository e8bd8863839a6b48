"""The reid-strong-baseline network (ResNet50 + BN neck) and checkpoint loading.

The structure and state_dict keys are those of michuanhaohao/reid-strong-baseline@3da7e6f0:
its own ResNet50 (no ReLU after the stem's bn1), ``MODEL.LAST_STRIDE`` for layer4, global average
pooling, a BatchNorm1d neck whose bias is frozen at zero, and a classifier. Only the inference network
is built: ImageNet weights are never downloaded or loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from yacs.config import CfgNode

from .errors import CheckpointError, ConfigError

IN_PLANES = 2048
NUM_CLASSES_MARKET = 751


class Bottleneck(nn.Module):
    """ResNet bottleneck block; the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        return self.relu(out + residual)


class ResNet(nn.Module):
    """reid-strong-baseline's ResNet (no fc, no ReLU after bn1)."""

    def __init__(self, last_stride: int = 1, layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=last_stride)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.bn1(self.conv1(x)))  # RSB: the ReLU after bn1 is commented out
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Baseline(nn.Module):
    """Backbone + GAP + BN neck + classifier; eval output chosen by TEST.NECK_FEAT."""

    in_planes = IN_PLANES

    def __init__(self, num_classes: int, last_stride: int, neck: str, neck_feat: str) -> None:
        super().__init__()
        self.base = ResNet(last_stride)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes
        self.neck = neck
        self.neck_feat = neck_feat
        if neck == "no":
            self.classifier = nn.Linear(self.in_planes, num_classes)
        elif neck == "bnneck":
            self.bottleneck = nn.BatchNorm1d(self.in_planes)
            self.bottleneck.bias.requires_grad_(False)  # no shift
            self.classifier = nn.Linear(self.in_planes, num_classes, bias=False)
        else:
            raise ConfigError(f"MODEL.NECK: {neck!r} is not one of ['bnneck', 'no']")

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        global_feat = self.gap(self.base(x)).flatten(1)  # (N, 2048)
        feat = self.bottleneck(global_feat) if self.neck == "bnneck" else global_feat
        if self.training:
            return self.classifier(feat), global_feat
        return feat if self.neck_feat == "after" else global_feat


def build_model(cfg: CfgNode, num_classes: int = NUM_CLASSES_MARKET) -> Baseline:
    """The inference network for ``cfg`` in eval mode (random weights; load a checkpoint next)."""
    if cfg.MODEL.NAME != "resnet50":
        raise ConfigError(f"MODEL.NAME: only 'resnet50' is supported, got {cfg.MODEL.NAME!r}")
    model = Baseline(num_classes, int(cfg.MODEL.LAST_STRIDE), cfg.MODEL.NECK, cfg.TEST.NECK_FEAT)
    return model.eval()


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict | nn.Module):
                return _unwrap(obj[key], path)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise CheckpointError(
        f"{path}: not a reid-strong-baseline checkpoint: expected a state_dict (or {{'model': ...}} / "
        f"{{'state_dict': ...}}), got {type(obj).__name__}"
    )


def read_state_dict(path: str | os.PathLike[str], trust: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, unwrapped and with 'module.' prefixes removed.

    ``torch.load(weights_only=True)`` is used unless ``trust`` is set: a pickled whole model (old
    ignite checkpoints) can run arbitrary code when loaded, so it needs an explicit decision.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:
        if trust:
            raise CheckpointError(f"{path}: cannot load checkpoint: {exc}") from exc
        raise CheckpointError(
            f"{path}: cannot load with weights_only=True ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            "If this is a pickled whole model from old ignite and you trust its origin, pass --trust-checkpoint."
        ) from exc
    state = _unwrap(obj, path)
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], trust: bool = False) -> nn.Module:
    """Load a checkpoint into ``model`` strictly (classifier of any class count ignored).

    Every missing or unexpected key and every shape mismatch is named in one CheckpointError.
    """
    state = read_state_dict(path, trust=trust)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    given = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(given)
        if tuple(given[k].shape) != tuple(own[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes)}")
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not match the network: " + " | ".join(problems))
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(given[k].to(v.dtype))
    return model


def load_model(cfg: CfgNode, weights: str | os.PathLike[str] | None = None, trust: bool = False) -> Baseline:
    """build_model + load_checkpoint(TEST.WEIGHT or ``weights``), in eval mode."""
    path = weights or cfg.TEST.WEIGHT
    if not path:
        raise ConfigError("no checkpoint given: set TEST.WEIGHT (or --weights)")
    model = build_model(cfg)
    load_checkpoint(model, path, trust=trust)
    return model.eval()


_DEMO_STEM_SIGMA = 2.0  # pixels; Gaussian low-pass applied to the demo stem filters
_DEMO_BN3_GAMMA = 0.03  # residual-branch last-BN scale of the demo checkpoint


def _low_pass(weight: torch.Tensor, sigma: float) -> torch.Tensor:
    """``weight`` (O, I, k, k) with every k x k filter convolved ("same" size) with a normalised Gaussian."""
    k = weight.shape[-1]
    r = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = torch.outer(g, g).to(weight.dtype)[None, None]
    flat = weight.reshape(-1, 1, k, k)
    return nn.functional.conv2d(flat, kernel, padding=k // 2).reshape(weight.shape)


def write_demo_checkpoint(
    path: str | os.PathLike[str],
    calibration_images: torch.Tensor | None = None,
    seed: int = 0,
    num_classes: int = NUM_CLASSES_MARKET,
) -> Path:
    """Write a deterministic demo checkpoint in the released format (flat state_dict, classifier [751, 2048]).

    Weights are Kaiming-initialised from ``seed``. Like a trained network's, the stem filters are smooth
    (random 7x7 filters low-passed by a Gaussian) and each residual branch's last BN is scaled well down
    (gamma 0.03), so the network stays close to its shortcut paths, keeps colour/texture information and is
    robust to pixel-level noise (about +-2 grey levels moves features by < 0.1 % in cosine) and hence to
    int8 quantisation. BN running statistics are then re-estimated on ``calibration_images`` (float32 NCHW,
    normalised) so that activations are well conditioned in eval mode. Retrieval with it is well above
    chance on the synthetic Market-1501.
    """
    from .utils import atomic_path

    gen = torch.Generator().manual_seed(seed)
    model = Baseline(num_classes, 1, "bnneck", "after")
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                weight = torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5
                if name == "base.conv1":
                    weight = _low_pass(weight, _DEMO_STEM_SIGMA)
                m.weight.copy_(weight)
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                # Small last-BN scales keep the shortcut paths dominant; layer4's shortcut BN is scaled too, so
                # that the pooled features have the magnitude of a trained model's (~0.1-5, not tens).
                if name == "bottleneck":
                    m.weight.fill_(0.1)
                elif name.endswith("bn3"):
                    m.weight.fill_(_DEMO_BN3_GAMMA)
                else:
                    m.weight.fill_(0.2 if name == "base.layer4.0.downsample.1" else 1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.001)
        if calibration_images is not None and len(calibration_images):
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                    m.reset_running_stats()
                    m.momentum = None  # cumulative average over the calibration batches
            model.train()
            for chunk in torch.split(calibration_images.float(), 32):
                if len(chunk) > 1:
                    model(chunk)
            model.eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)
