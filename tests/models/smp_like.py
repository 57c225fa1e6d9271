"""A stand-in for `segmentation_models_pytorch.Unet(encoder_name="resnet18"|"resnet34", encoder_weights=None)`,
written from smp's public layout (CI cannot install torchvision beside this CPU torch build).

Same module names and structure as smp's Unet (checked against segmentation-models-pytorch 0.6.0: equal
state_dict keys and shapes, identical outputs after loading the same weights), so state_dict keys match:
- encoder: torchvision's ResNet minus fc/avgpool (conv1 7x7/2, bn1, relu, maxpool 3x3/2 pad 1, layer1..4 of
  BasicBlocks with 1x1/2 downsample), returning the 6 features [x, stem, layer1, layer2, layer3, layer4];
- decoder: center Identity, 5 blocks: nearest upsample to the next feature's size (the input's for the
  last block), concat [x, skip], two Conv2dReLU (conv 3x3 no bias, BN, ReLU), attention Identity;
- segmentation_head: conv 3x3 (padding 1), Identity upsampling, Identity activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNetEncoder(nn.Module):
    """torchvision.models.ResNet (BasicBlock) without fc/avgpool, as smp's ResNetEncoder."""

    def __init__(self, layers: tuple[int, int, int, int], in_channels: int = 3, depth: int = 5) -> None:
        super().__init__()
        self._depth = depth
        self._in_channels = in_channels
        self._out_channels = (in_channels, 64, 64, 128, 256, 512)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def out_channels(self) -> tuple[int, ...]:
        return self._out_channels[: self._depth + 1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stages = [
            nn.Identity(),
            nn.Sequential(self.conv1, self.bn1, self.relu),
            nn.Sequential(self.maxpool, self.layer1),
            self.layer2,
            self.layer3,
            self.layer4,
        ]
        features = []
        for i in range(self._depth + 1):
            x = stages[i](x)
            features.append(x)
        return features


class Conv2dReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 use_batchnorm: bool = True) -> None:  # fmt: skip
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=not use_batchnorm)
        bn = nn.BatchNorm2d(out_channels) if use_batchnorm else nn.Identity()
        super().__init__(conv, bn, nn.ReLU(inplace=True))


class Attention(nn.Module):
    def __init__(self) -> None:  # attention_type=None
        super().__init__()
        self.attention = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x)


class DecoderBlock(nn.Module):
    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, use_batchnorm: bool = True
    ) -> None:
        super().__init__()
        self.conv1 = Conv2dReLU(in_channels + skip_channels, out_channels, 3, 1, use_batchnorm)
        self.attention1 = Attention()
        self.conv2 = Conv2dReLU(out_channels, out_channels, 3, 1, use_batchnorm)
        self.attention2 = Attention()

    def forward(
        self, x: torch.Tensor, height: int, width: int, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = F.interpolate(x, size=(height, width), mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
            x = self.attention1(x)
        x = self.conv1(x)
        x = self.conv2(x)
        return self.attention2(x)


class UnetDecoder(nn.Module):
    def __init__(self, encoder_channels: tuple[int, ...], decoder_channels: tuple[int, ...],
                 n_blocks: int = 5, use_batchnorm: bool = True) -> None:  # fmt: skip
        super().__init__()
        encoder_channels = encoder_channels[1:][::-1]
        head_channels = encoder_channels[0]
        in_channels = [head_channels, *decoder_channels[:-1]]
        skip_channels = [*encoder_channels[1:], 0]
        self.center = nn.Identity()
        self.blocks = nn.ModuleList(
            [
                DecoderBlock(i, s, o, use_batchnorm)
                for i, s, o in zip(in_channels, skip_channels, decoder_channels, strict=True)
            ]
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        shapes = [f.shape[2:] for f in features][::-1]  # [head, ..., input] sizes
        features = features[1:][::-1]
        head, skips = features[0], features[1:]
        x = self.center(head)
        for i, block in enumerate(self.blocks):
            h, w = shapes[i + 1]
            x = block(x, h, w, skips[i] if i < len(skips) else None)
        return x


class Activation(nn.Module):
    def __init__(self) -> None:  # activation=None
        super().__init__()
        self.activation = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x)


class SegmentationHead(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        conv2d = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2)
        super().__init__(conv2d, nn.Identity(), Activation())


class SmpLikeUnet(nn.Module):
    """smp.Unet(encoder_name, encoder_weights=None, in_channels, classes, decoder_channels)."""

    def __init__(self, encoder_name: str = "resnet34", in_channels: int = 3, classes: int = 1,
                 decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)) -> None:  # fmt: skip
        super().__init__()
        if encoder_name not in _LAYERS:
            raise ValueError(f"encoder {encoder_name!r} not in {tuple(_LAYERS)}")
        self.encoder = ResNetEncoder(_LAYERS[encoder_name], in_channels)
        self.decoder = UnetDecoder(
            self.encoder.out_channels, decoder_channels, n_blocks=len(decoder_channels)
        )
        self.segmentation_head = SegmentationHead(decoder_channels[-1], classes, kernel_size=3)
        self.classification_head = None

    # smp >= 0.5: Unet interpolates to each skip's size, so any H/W >= 32 works (older versions raised here)
    requires_divisible_input_shape = False

    def check_input_shape(self, x: torch.Tensor) -> None:
        if not self.requires_divisible_input_shape:
            return
        h, w = x.shape[-2:]
        output_stride = 32
        if h % output_stride != 0 or w % output_stride != 0:
            new_h = (h // output_stride + 1) * output_stride if h % output_stride != 0 else h
            new_w = (w // output_stride + 1) * output_stride if w % output_stride != 0 else w
            raise RuntimeError(
                f"Wrong input shape height={h}, width={w}. Expected image height and width "
                f"divisible by {output_stride}. Consider pad your images to shape ({new_h}, {new_w})."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        features = self.encoder(x)
        decoder_output = self.decoder(features)
        return self.segmentation_head(decoder_output)
