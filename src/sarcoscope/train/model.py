"""A compact 2-D U-Net for the four tissue classes (plus background).

Small on purpose: it must train on a 2-core CPU in about an hour and run in well under
150 ms per slice with onnxruntime. onnxruntime folds BatchNorm into the convolutions when it loads the model.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``len(channels)`` resolution levels; input sides must divide by 2**(levels-1).

    Parameters
    ----------
    in_channels:
        Number of input channels (HU windows, see ``segment.onnx_model.window_channels``).
    n_classes:
        Output logits per pixel: the compartments (see ``segment.onnx_model``).
    channels:
        Feature width of each level, finest first, e.g. ``(16, 32, 64, 128, 256)``.
    """

    def __init__(
        self, in_channels: int = 2, n_classes: int = 4, channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"UNet needs at least 2 levels, got channels={channels}")
        self.channels = tuple(channels)
        self.down = nn.ModuleList()
        c_prev = in_channels
        for c in channels:
            self.down.append(_block(c_prev, c))
            c_prev = c
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for c_hi, c_lo in zip(reversed(channels[:-1]), reversed(channels[1:])):
            self.up.append(nn.ConvTranspose2d(c_lo, c_hi, 2, stride=2))
            self.dec.append(_block(2 * c_hi, c_hi))
        self.head = nn.Conv2d(channels[0], n_classes, 1)

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = up(x)
            x = dec(torch.cat([x, skip], dim=1))
        return self.head(x)
