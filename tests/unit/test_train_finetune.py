"""Fine-tuning on 'hospital' data: phantom slices written as DICOM with Slice-O-Matic .tag masks.

Checks the whole bring-your-own-annotations path: pairing, reading the .tag in stored row order
(including a feet-first file whose columns are stored mirrored), the held-out split, the
before/after report and a loadable fine-tuned ONNX file.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.conftest import REPO_ROOT  # noqa: E402

torch = pytest.importorskip("torch")

from sarcoscope.types import CTVolume, SeriesInfo  # noqa: E402

TAGS = np.array([0, 1, 2, 5, 7], dtype=np.uint8)  # our label → Alberta Slice-O-Matic tag


def _write_case(folder: Path, name: str, seed: int, position: str) -> tuple[Path, np.ndarray]:
    from sarcoscope.io import read_ct
    from sarcoscope.phantom import make_slice, random_params, write_dicom_series
    from sarcoscope.train.annotations import stored_to_display_2d

    s = make_slice(random_params(np.random.default_rng(seed), matrix=(160, 160), pixel_spacing_mm=2.5), level="L3")
    sp = s.pixel_spacing_mm
    affine = np.diag([sp[1], sp[0], 1.0, 1.0])
    vol = CTVolume(hu=np.round(s.hu)[None].astype(np.int16), affine=affine,
                   series=SeriesInfo(source_path=name, format="phantom"))
    case_dir = folder / name
    (path,) = write_dicom_series(vol, case_dir, patient_position=position)
    back = read_ct(path)
    stored = TAGS[s.labels]
    # write the tag in the file's stored order: invert the display mapping by trying it
    for cand in (stored, stored[::-1], stored[:, ::-1], stored[::-1, ::-1]):
        if np.array_equal(stored_to_display_2d(cand, back), TAGS[s.labels]):
            stored = np.ascontiguousarray(cand)
            break
    header = f"width: {stored.shape[1]} height: {stored.shape[0]}\n".encode()
    path.with_name(path.name + ".tag").write_bytes(header + b"\x0c" + stored.tobytes())
    return path, s.labels


def test_finetune_from_onnx_reports_before_and_after(tmp_path: Path) -> None:
    from sarcoscope.segment.onnx_model import OnnxSegmenter
    from sarcoscope.train.config import load_config
    from sarcoscope.train.export import export_onnx
    from sarcoscope.train.finetune import finetune, load_annotated
    from sarcoscope.train.loop import grid_spec
    from sarcoscope.train.model import UNet

    data = tmp_path / "data"
    truth = {}
    for i, pos in enumerate(("HFS", "FFS", "HFS")):
        path, labels = _write_case(data, f"case{i}", 100 + i, pos)
        truth[path.relative_to(data).as_posix() + "#0"] = labels
    cfg = load_config(REPO_ROOT / "configs" / "tiny.toml")
    cfg = replace(cfg, run_dir=str(tmp_path / "run"), finetune=replace(cfg.finetune, steps=6, holdout_fraction=0.34),
                  train=replace(cfg.train, val_every=3, batch_size=2))
    items = load_annotated(data, None, cfg.finetune.tag_map)
    assert len(items) == 3
    for it in items:  # the .tag came back in display orientation with our label values
        assert np.array_equal(it.labels, truth[it.case]), it.case

    torch.manual_seed(0)
    init = tmp_path / "init.onnx"
    export_onnx(UNet(2, 4, cfg.model.channels), grid_spec(cfg), init, name="init", version="0")
    report = finetune(cfg, data, init=init, out=tmp_path / "ft.onnx", value_map=None)
    assert (report.n_train, report.n_holdout) == (2, 1)
    assert report.before and report.after
    text = report.report_path.read_text()
    assert "| before | muscle |" in text and "| after | muscle |" in text
    seg = OnnxSegmenter(report.onnx_path)
    assert seg.version.endswith("+ft") and seg.sha256 == report.sha256


def test_training_from_an_exported_model_keeps_its_batchnorm(tmp_path: Path) -> None:
    """`train --init FILE` starts from the file's behaviour: its BatchNorm is folded into the
    convolutions, so training must not re-estimate it from batches (which rescaled every layer
    and blew the loss up from 0.16 to 2.8 on the shipped model). At a learning rate of ~0 the
    trained file must predict what the initial file predicts."""
    from sarcoscope.segment.onnx_model import OnnxSegmenter
    from sarcoscope.train.config import load_config
    from sarcoscope.train.data import STREAM_TRAIN, SliceSource, draw_slice
    from sarcoscope.train.export import export_onnx
    from sarcoscope.train.loop import grid_spec, train_from_config
    from sarcoscope.train.model import UNet

    cfg = load_config(REPO_ROOT / "configs" / "tiny.toml")
    cfg = replace(
        cfg, out=str(tmp_path / "out.onnx"), run_dir=str(tmp_path / "run"),
        data=replace(cfg.data, n_train=4, n_val=1, cache_dir=str(tmp_path / "cache")),
        train=replace(cfg.train, steps=3, val_every=3, lr=1e-12, batch_size=2),
    )
    torch.manual_seed(0)
    init = tmp_path / "init.onnx"
    export_onnx(UNet(2, 4, cfg.model.channels), grid_spec(cfg), init, name="init", version="0")
    result = train_from_config(cfg, init=init)
    s = draw_slice(SliceSource(cfg.data.generator, cfg.seed, STREAM_TRAIN, cfg.data.levels, cfg.data.level_weights), 0)
    before, _ = OnnxSegmenter(init, threads=1).logits(s.hu, s.pixel_spacing_mm)
    after, _ = OnnxSegmenter(result.onnx_path, threads=1).logits(s.hu, s.pixel_spacing_mm)
    assert np.abs(after - before).max() < 1e-3 * max(1.0, float(np.abs(before).max()))
