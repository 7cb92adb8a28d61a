"""A deliberately crude stand-in slice generator for fast unit tests of the training code.

Ellipses only: skin, subcutaneous fat, an abdominal muscle wall, psoas and paraspinal
muscles, a vertebra, bowel loops with gas, visceral fat and IMAT specks. It is *not*
training data for a shipped model (that is ``sarcoscope.phantom``); it lets the training,
export and inference code be tested without the phantom.
"""

from __future__ import annotations

import numpy as np


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def toy_slice(rng: np.random.Generator, level: str = "L3") -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Return (hu float32, labels uint8, (row_mm, col_mm)) for one toy abdomen."""
    n = int(rng.choice([256, 320, 384]))
    spacing = float(rng.uniform(1.0, 1.6))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) * spacing
    c = n * spacing / 2
    cy, cx = c + rng.uniform(-15, 15), c + rng.uniform(-15, 15)
    ry, rx = rng.uniform(90, 140), rng.uniform(130, 190)
    sat = rng.uniform(6, 35)
    wall = rng.uniform(5, 12)
    hu = np.full((n, n), -1000.0, dtype=np.float32)
    labels = np.zeros((n, n), dtype=np.uint8)
    body = _ellipse(yy, xx, cy, cx, ry, rx)
    hu[body] = rng.uniform(-115, -95)
    labels[body] = 4
    inner_wall = _ellipse(yy, xx, cy, cx, ry - sat, rx - sat)
    muscle_hu = rng.uniform(25, 55)
    hu[inner_wall] = muscle_hu
    labels[inner_wall] = 1
    cavity = _ellipse(yy, xx, cy, cx, ry - sat - wall, rx - sat - wall)
    hu[cavity] = rng.uniform(-100, -80)
    labels[cavity] = 3
    # vertebra, paraspinals and psoas near the posterior wall
    vy = cy + (ry - sat - wall) * 0.55
    for side in (-1, 1):
        m = _ellipse(yy, xx, vy + 28, cx + side * 32, 22, 26)
        hu[m], labels[m] = muscle_hu, 1
        p = _ellipse(yy, xx, vy - 5, cx + side * 38, 16, 12)
        hu[p], labels[p] = muscle_hu, 1
    v = _ellipse(yy, xx, vy, cx, 17, 21)
    hu[v], labels[v] = rng.uniform(150, 300), 0
    # bowel loops: soft tissue or gas, never a tissue class
    for _ in range(int(rng.integers(3, 8))):
        by = cy + rng.uniform(-0.5, 0.2) * ry
        bx = cx + rng.uniform(-0.5, 0.5) * rx
        r = rng.uniform(10, 25)
        b = _ellipse(yy, xx, by, bx, r, r) & cavity
        hu[b], labels[b] = (-900.0 if rng.random() < 0.4 else rng.uniform(20, 45)), 0
    # IMAT specks inside muscle
    muscle = labels == 1
    specks = (rng.random((n, n)) < rng.uniform(0.005, 0.03)) & muscle
    hu[specks], labels[specks] = rng.uniform(-100, -60), 2
    # skin rim
    skin = body & ~_ellipse(yy, xx, cy, cx, ry - 1.5, rx - 1.5)
    hu[skin], labels[skin] = 40.0, 0
    hu += rng.normal(0, rng.uniform(3, 15), hu.shape).astype(np.float32)
    return hu, labels, (spacing, spacing)
