"""End to end: configs/tiny.toml trains on the phantom, exports ONNX, and OnnxSegmenter runs it.

The check that cannot pass trivially: on its own training phantom the tiny model must beat the
best *constant* compartment prediction (every body pixel called muscle envelope, or visceral
fat, or subcutaneous fat, then the same HU gating) by a clear margin in mean tissue Dice.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared CPUs)
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

torch = pytest.importorskip("torch")

from sarcoscope.evaluate import compare_case  # noqa: E402
from sarcoscope.segment.onnx_model import OnnxSegmenter, tissues_from_compartments  # noqa: E402
from sarcoscope.train.config import load_config  # noqa: E402
from sarcoscope.train.data import STREAM_TRAIN, SliceSource, draw_slice  # noqa: E402
from sarcoscope.train.export import unet_from_onnx  # noqa: E402
from sarcoscope.train.loop import train_from_config  # noqa: E402


def _mean_dice(case) -> float:
    vals = [a.dice for a in case.tissues.values()]
    return float(np.nanmean([0.0 if np.isnan(v) else v for v in vals]))


@pytest.mark.slow
def test_tiny_config_trains_exports_and_beats_constant(tmp_path: Path) -> None:
    cfg = load_config(REPO_ROOT / "configs" / "tiny.toml")
    cfg = replace(
        cfg,
        out=str(tmp_path / "tiny.onnx"),
        run_dir=str(tmp_path / "run"),
        data=replace(cfg.data, cache_dir=str(tmp_path / "cache")),
    )
    result = train_from_config(cfg)
    assert result.steps_done == cfg.train.steps
    assert result.onnx_path.is_file() and result.card_path.is_file()
    assert result.onnx_path.stat().st_size < 10_000_000

    seg = OnnxSegmenter(result.onnx_path, threads=2)
    assert seg.sha256 == result.sha256 and seg.card is not None and seg.version == cfg.version

    source = SliceSource(cfg.data.generator, cfg.seed, STREAM_TRAIN, cfg.data.levels, cfg.data.level_weights)
    model_scores, constant_scores = [], []
    for i in range(4):
        s = draw_slice(source, i)
        labels = seg.segment(s.hu, s.pixel_spacing_mm)
        assert labels.shape == s.hu.shape and labels.dtype == np.uint8
        assert labels.max() <= 4
        model_scores.append(_mean_dice(compare_case(str(i), s.hu, labels, s.labels, s.pixel_spacing_mm)))
        body = s.hu > -500
        best = 0.0
        for c in (1, 2, 3):
            const = tissues_from_compartments(np.where(body, c, 0).astype(np.uint8), s.hu)
            best = max(best, _mean_dice(compare_case(str(i), s.hu, const, s.labels, s.pixel_spacing_mm)))
        constant_scores.append(best)
    assert np.mean(model_scores) > np.mean(constant_scores) + 0.1, (model_scores, constant_scores)

    # --init: the exported ONNX rebuilds into the same torch network
    model, spec = unet_from_onnx(result.onnx_path)
    assert spec == seg.spec
    x = torch.randn(1, 2, 64, 64)
    with torch.no_grad():
        ours = model.eval()(x).numpy()
    theirs = seg._session.run(None, {"hu_windows": x.numpy()})[0]
    assert np.allclose(ours, theirs, atol=1e-3)
