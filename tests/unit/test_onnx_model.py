"""OnnxSegmenter: grid resampling, HU gating, model loading errors (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sarcoscope.errors import InputError, ModelError
from sarcoscope.segment.base import Segmenter
from sarcoscope.segment.onnx_model import (
    METADATA_KEY,
    GridSpec,
    OnnxSegmenter,
    compartments_from_tissues,
    logits_to_compartments,
    resample_2d,
    resample_matrix,
    tissues_from_compartments,
    to_grid_hu,
    window_channels,
)

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _write_linear_model(path: Path, weights: np.ndarray, bias: np.ndarray, meta: dict[str, str] | None) -> Path:
    """A 1x1-convolution 'network' with dynamic H, W: logits = weights @ channels + bias."""
    n_out, n_in = weights.shape
    w = helper.make_tensor("w", TensorProto.FLOAT, [n_out, n_in, 1, 1], weights.astype(np.float32).ravel())
    b = helper.make_tensor("b", TensorProto.FLOAT, [n_out], bias.astype(np.float32))
    node = helper.make_node("Conv", ["hu_windows", "w", "b"], ["logits"])
    graph = helper.make_graph(
        [node], "linear",
        [helper.make_tensor_value_info("hu_windows", TensorProto.FLOAT, ["n", n_in, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", n_out, "h", "w"])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (meta or {}).items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(model, str(path))
    return path


def _spec_meta(spec: GridSpec) -> dict[str, str]:
    return {METADATA_KEY: spec.to_json(), "name": "test-linear", "version": "9.9"}


def test_resample_identity_and_constant() -> None:
    m = resample_matrix(10, 1.0, 10, 1.0).toarray()
    assert np.allclose(m, np.eye(10))
    # downsampling keeps constants constant and every row sums to 1
    d = resample_matrix(512, 0.7, 240, 1.5)
    assert np.allclose(np.asarray(d.sum(axis=1)).ravel(), 1.0)
    img = np.full((50, 60), 7.0, dtype=np.float32)
    out = resample_2d(img, resample_matrix(50, 0.8, 27, 1.5), resample_matrix(60, 0.8, 32, 1.5))
    assert out.shape == (27, 32) and np.allclose(out, 7.0)


def test_resample_preserves_position_of_an_edge() -> None:
    # a step at 30 mm on a 0.5 mm grid stays at 30 mm after going to 1.5 mm and back
    n = 120
    x = (np.arange(n) + 0.5) * 0.5
    sig = (x > 30).astype(np.float32)[None, :].repeat(2, 0)
    down = resample_2d(sig, resample_matrix(2, 1, 2, 1), resample_matrix(n, 0.5, 40, 1.5))
    up = resample_2d(down, resample_matrix(2, 1, 2, 1), resample_matrix(40, 1.5, n, 0.5))
    crossing = x[np.argmax(up[0] > 0.5)]
    assert abs(crossing - 30.0) <= 0.75


def test_gating_follows_alberta_windows() -> None:
    hu = np.array([[40.0, -100.0, -100.0, -100.0, 200.0, -500.0, -29.5]], dtype=np.float32)
    comp = np.array([[1, 1, 2, 3, 1, 2, 1]], dtype=np.uint8)
    assert tissues_from_compartments(comp, hu).tolist() == [[1, 2, 3, 4, 0, 0, 0]]
    assert compartments_from_tissues(np.array([0, 1, 2, 3, 4], dtype=np.uint8)).tolist() == [0, 1, 1, 2, 3]


def test_grid_round_trip_maps_back_to_original_pixels() -> None:
    spec = GridSpec()
    hu = np.full((300, 280), -1000.0, dtype=np.float32)
    hu[100:200, 50:230] = 40.0
    grid, ctx = to_grid_hu(hu, (0.8, 0.8), spec)
    assert grid.shape[0] % spec.divisor == 0 and grid.shape[1] % spec.divisor == 0
    # logits: class 1 wherever the grid is dense
    body = (grid > -500).astype(np.float32)
    logits = np.stack([1 - body, body, np.zeros_like(body), np.zeros_like(body)])
    comp = logits_to_compartments(logits, ctx, spec)
    assert comp.shape == hu.shape
    ref = hu > -500
    agreement = (comp == 1) == ref
    assert agreement.mean() > 0.995
    assert window_channels(grid, spec).shape == (2,) + grid.shape


def test_missing_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        OnnxSegmenter(tmp_path / "nope.onnx")


def test_corrupt_model_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not onnx")
    with pytest.raises(ModelError, match="cannot be loaded"):
        OnnxSegmenter(bad)


def test_foreign_onnx_without_metadata_is_refused(tmp_path: Path) -> None:
    path = _write_linear_model(tmp_path / "m.onnx", np.zeros((4, 2)), np.zeros(4), None)
    with pytest.raises(ModelError, match="not a sarcoscope one"):
        OnnxSegmenter(path)


def test_wrong_class_count_is_refused(tmp_path: Path) -> None:
    path = _write_linear_model(tmp_path / "m.onnx", np.zeros((5, 2)), np.zeros(5), _spec_meta(GridSpec()))
    with pytest.raises(ModelError, match="compartments"):
        OnnxSegmenter(path)


def test_linear_model_segments_and_gates(tmp_path: Path) -> None:
    # logits favour the muscle envelope inside the body: HU then decides muscle vs IMAT
    spec = GridSpec()
    w = np.zeros((4, 2))
    b = np.array([-5.0, 1.0, 0.0, 0.0])
    w[0, 1] = -10.0  # wide window channel: air (-1) → none wins
    path = _write_linear_model(tmp_path / "m.onnx", w, b, _spec_meta(spec))
    card = {"sha256": "0" * 64}
    (tmp_path / "m.json").write_text(json.dumps(card))
    seg = OnnxSegmenter(path, threads=1)
    assert isinstance(seg, Segmenter)
    assert seg.name == "test-linear" and seg.version == "9.9" and len(seg.sha256) == 64
    assert seg.card is None  # the card describes another file: ignored
    hu = np.full((200, 220), -1000.0, dtype=np.float32)
    hu[40:160, 40:180] = 45.0
    hu[80:120, 80:140] = -100.0
    labels = seg.segment(hu, (0.9, 0.9))
    assert labels.dtype == np.uint8 and labels.shape == hu.shape
    assert (labels[90:110, 90:130] == 2).all()  # fat inside the envelope: IMAT
    assert (labels[50:70, 50:70] == 1).all()
    assert (labels[:20] == 0).all()
    empty = seg.segment(np.full((64, 64), -1000.0, dtype=np.float32), (1.0, 1.0))
    assert not empty.any()


def test_bad_slices_are_input_errors(tmp_path: Path) -> None:
    path = _write_linear_model(tmp_path / "m.onnx", np.zeros((4, 2)), np.zeros(4), _spec_meta(GridSpec()))
    seg = OnnxSegmenter(path, threads=1)
    with pytest.raises(InputError, match="2-D slice"):
        seg.segment(np.zeros((3, 4, 5), dtype=np.float32), (1.0, 1.0))
    with pytest.raises(InputError, match="pixel spacing"):
        seg.segment(np.zeros((32, 32), dtype=np.float32), (0.0, 1.0))
    with pytest.raises(InputError, match="NaN"):
        seg.segment(np.full((32, 32), np.nan, dtype=np.float32), (1.0, 1.0))
