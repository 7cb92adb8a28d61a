"""Soft training targets: compartment fractions per model pixel (data.targets = "soft").

Hard targets only say which compartment holds most of a model pixel; the fractions say
where between model pixels a fascia lies. These tests pin down that the fractions carry
that position, survive augmentation, and that the loss treats a one-hot fraction map
exactly as the hard label it encodes.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared CPUs)
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sarcoscope.segment.onnx_model import GridSpec  # noqa: E402
from sarcoscope.tissues import AIR_HU  # noqa: E402
from sarcoscope.train.augment import augment_batch  # noqa: E402
from sarcoscope.train.config import AugmentConfig  # noqa: E402
from sarcoscope.train.data import to_canvas, to_canvas_soft  # noqa: E402
from sarcoscope.train.loop import segmentation_loss  # noqa: E402

SPEC = GridSpec(spacing_mm=1.5, divisor=16)
STILL = AugmentConfig(
    rotate_deg=0.0, scale_range=(1.0, 1.0), aspect_range=(1.0, 1.0), shift_frac=0.0, elastic_p=0.0,
    hu_shift_sd=0.0, hu_scale_sd=0.0, noise_p=0.0, blur_p=0.0, lowres_p=0.0, gamma_p=0.0, cutout_p=0.0,
)


def _two_compartment_slice(edge_col: int) -> tuple[np.ndarray, np.ndarray]:
    """A 0.5 mm slice: a body block, muscle envelope (1) left of ``edge_col``, SAT compartment (3) right."""
    hu = np.full((200, 200), AIR_HU, dtype=np.float32)
    target = np.zeros((200, 200), dtype=np.uint8)
    hu[40:160, 40:160] = 40.0
    target[40:160, 40:edge_col] = 1
    target[40:160, edge_col:160] = 3
    return hu, target


def test_fractions_place_the_edge_between_model_pixels() -> None:
    """Moving a fascia by one 0.5 mm pixel leaves the hard target unchanged but moves the fractions."""
    spacing = (0.5, 0.5)
    fractions, hard = [], []
    for edge in (100, 101, 102):  # 50.0, 50.5, 51.0 mm: all inside one 1.5 mm model pixel's reach
        hu, target = _two_compartment_slice(edge)
        c_hu, c_lab, c_frac = to_canvas_soft(hu, target, spacing, SPEC, 128)
        plain_hu, plain_lab = to_canvas(hu, target, spacing, SPEC, 128)
        assert np.array_equal(plain_hu, c_hu) and np.array_equal(plain_lab, c_lab)
        row = c_frac[:, 64]  # (3, columns): envelope, visceral, subcutaneous
        assert int(row.sum(axis=0).max()) <= 255
        fractions.append(row[0].astype(int))
        hard.append(c_lab[64])
    envelope = [int(f.sum()) for f in fractions]
    assert envelope[0] < envelope[1] < envelope[2]  # each 0.5 mm step adds a third of a model pixel
    assert abs((envelope[2] - envelope[0]) - 255 * 2 / 3) < 12
    assert sum(not np.array_equal(hard[0], h) for h in hard[1:]) <= 1  # hard labels barely see it


def test_soft_augmentation_matches_the_hard_path() -> None:
    """Same draws, same image; the soft target's arg-max is the hard target; fractions sum to 1."""
    hu, target = _two_compartment_slice(101)
    c_hu, c_lab, c_frac = to_canvas_soft(hu, target, (0.5, 0.5), SPEC, 128)
    hu_b, lab_b, frac_b = np.stack([c_hu, c_hu]), np.stack([c_lab, c_lab]), np.stack([c_frac, c_frac])
    for cfg in (STILL, replace(STILL, rotate_deg=10.0, scale_range=(0.9, 1.1), elastic_p=1.0)):
        x_hard, y_hard = augment_batch(hu_b, lab_b, 96, SPEC, cfg, torch.Generator().manual_seed(3))
        x_soft, y_soft = augment_batch(hu_b, lab_b, 96, SPEC, cfg, torch.Generator().manual_seed(3), soft=frac_b)
        assert torch.equal(x_hard, x_soft)
        assert y_soft.shape == (2, 4, 96, 96) and y_soft.dtype == torch.float32
        assert torch.allclose(y_soft.sum(dim=1), torch.ones(2, 96, 96), atol=1e-5)
        agree = (y_soft.argmax(dim=1) == y_hard).float().mean()
        assert agree > 0.98  # differences only where a pixel is split almost evenly
        assert ((y_soft > 0.05) & (y_soft < 0.95)).any()  # and the edge stays fractional


def test_loss_of_one_hot_fractions_equals_the_hard_loss() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 16, 16, generator=g)
    labels = torch.randint(0, 4, (2, 16, 16), generator=g)
    onehot = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    weights = torch.tensor([0.5, 1.5, 1.0, 1.0])
    hard = segmentation_loss(logits, labels, weights, 1.0)
    soft = segmentation_loss(logits, onehot, weights, 1.0)
    assert torch.allclose(hard, soft, atol=1e-5)
    # a split pixel pulls the probability to the split, not to either side
    split = onehot.clone()
    split[:, :, 0, 0] = torch.tensor([0.0, 0.5, 0.0, 0.5])
    assert not torch.allclose(segmentation_loss(logits, split, weights, 1.0), soft)
