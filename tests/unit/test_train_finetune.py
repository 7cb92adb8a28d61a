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



# --- the reviewed fine-tuning path: one small mixed folder (.tag and NIfTI), one run shared by several tests

ALBERTA = {1: 1, 2: 2, 5: 3, 7: 4}


def _write_nifti_case(folder: Path, name: str, seed: int) -> tuple[Path, np.ndarray]:
    from sarcoscope.io import read_ct
    from sarcoscope.phantom import make_slice, random_params, write_dicom_series, write_nifti

    s = make_slice(random_params(np.random.default_rng(seed), matrix=(160, 160), pixel_spacing_mm=2.5), level="L3")
    sp = s.pixel_spacing_mm
    vol = CTVolume(hu=np.round(s.hu)[None].astype(np.int16), affine=np.diag([sp[1], sp[0], 1.0, 1.0]),
                   series=SeriesInfo(source_path=name, format="phantom"))
    (path,) = write_dicom_series(vol, folder / name)
    write_nifti(read_ct(path), path.with_name(path.stem + ".nii.gz"), labels=s.labels[None].astype(np.uint8))
    return path, s.labels


def _tiny_cfg(tmp: Path, **finetune: object):
    from sarcoscope.train.config import load_config

    cfg = load_config(REPO_ROOT / "configs" / "tiny.toml")  # its grid: 2.0 mm
    return replace(cfg, run_dir=str(tmp / "run"), finetune=replace(cfg.finetune, **{"steps": 3, **finetune}),
                   train=replace(cfg.train, val_every=1, batch_size=2))


def _init_model(path: Path) -> Path:
    """A small sarcoscope ONNX file on a 1.5 mm grid (not the tiny config's 2.0 mm)."""
    from sarcoscope.segment.onnx_model import GridSpec
    from sarcoscope.train.export import export_onnx
    from sarcoscope.train.model import UNet

    torch.manual_seed(0)
    export_onnx(UNet(2, 4, (8, 16, 32, 64)), GridSpec(spacing_mm=1.5, divisor=8), path, name="init", version="0")
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """5 annotated slices (3 .tag, 2 NIfTI), one image without a mask and one mask without an image,
    fine-tuned once from a 1.5 mm model with --label-map; records the slices and grid each set was built on."""
    import sarcoscope.train.finetune as ft

    tmp = tmp_path_factory.mktemp("mixed")
    data = tmp / "data"
    truth = {}
    for i in range(5):
        path, labels = (_write_case(data, f"t{i}", 200 + i, "HFS") if i % 2 == 0
                        else _write_nifti_case(data, f"n{i}", 200 + i))
        truth[path.relative_to(data).as_posix() + "#0"] = labels
    lonely = data / "lonely" / "x.dcm"
    lonely.parent.mkdir()
    lonely.write_bytes(next((data / "t0").iterdir()).read_bytes())
    (data / "n1" / "orphan_seg.nii.gz").write_bytes(b"not read")
    built: list[tuple[list[str], float]] = []
    real_as_set = ft._as_set

    def recording_as_set(items, cfg, spec, path):  # type: ignore[no-untyped-def]
        built.append(([it.case for it in items], spec.spacing_mm))
        return real_as_set(items, cfg, spec, path)

    init = _init_model(tmp / "init.onnx")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ft, "_as_set", recording_as_set)
        report = ft.finetune(_tiny_cfg(tmp), data, init=init, out=tmp / "out" / "my.onnx", value_map=ALBERTA)
    return {"tmp": tmp, "data": data, "truth": truth, "init": init, "report": report, "built": built}


def test_tag_map_applies_to_tag_files_only(mixed: dict) -> None:
    """--label-map 1=1,2=2,5=3,7=4 (for .tag files) once turned the NIfTI maps' VAT (3) and SAT (4)
    into background; NIfTI label maps keep our labels."""
    from sarcoscope.train.finetune import load_annotated

    items = load_annotated(mixed["data"], ALBERTA, {1: 1})
    assert len(items) == 5
    for it in items:
        assert np.array_equal(it.labels, mixed["truth"][it.case]), it.case
    assert any(it.case.startswith("n") and (it.labels == 4).any() for it in items)


def test_unknown_tag_value_is_refused_naming_file_and_values(mixed: dict, tmp_path: Path) -> None:
    import shutil

    from sarcoscope.errors import InputError
    from sarcoscope.train.finetune import finetune

    data = tmp_path / "data"
    shutil.copytree(mixed["data"], data)
    tag = next((data / "t2").glob("*.tag"))
    raw = bytearray(tag.read_bytes())
    ff = raw.index(b"\x0c")
    body = np.frombuffer(bytes(raw[ff + 1 :]), np.uint8).copy()
    body[body == 7] = 9  # this site stores SAT as 9
    tag.write_bytes(bytes(raw[: ff + 1]) + body.tobytes())
    with pytest.raises(InputError, match=r"mask values 9 \(\d+ pixels\) are not in the label map") as info:
        finetune(_tiny_cfg(tmp_path), data, init=None, out=tmp_path / "m.onnx")
    assert str(tag) in str(info.value) and "tag_map" in str(info.value) and "9=4" in str(info.value)
    assert not (tmp_path / "m.onnx").exists()


def test_heldout_slices_never_train_nor_choose_the_weights(mixed: dict) -> None:
    import json

    report = mixed["report"]
    card = json.loads(report.onnx_path.with_suffix(".json").read_text())
    held = set(card["holdout_cases"])
    assert len(held) == report.n_holdout == 1 and report.n_val == 1 and report.n_train == 3
    used = [case for cases, _ in mixed["built"] for case in cases]  # training and validation sets given to fit
    assert used and not held & set(used)
    text = report.report_path.read_text()
    assert "never used to choose the weights" in text and "validation slice(s) carved from the training" in text


def test_finetuning_keeps_the_init_models_grid(mixed: dict) -> None:
    from sarcoscope.segment.onnx_model import OnnxSegmenter

    assert {spacing for _, spacing in mixed["built"]} == {1.5}
    assert OnnxSegmenter(mixed["report"].onnx_path).spec.spacing_mm == 1.5
    text = mixed["report"].report_path.read_text()
    assert "the config's grid (2 mm" in text and "uses the model's grid" in text


def test_report_names_the_model_and_lists_unpaired_files(mixed: dict) -> None:
    import hashlib

    report = mixed["report"]
    assert report.report_path == mixed["tmp"] / "out" / "my-report" / "summary.md"
    text = report.report_path.read_text()
    sha = hashlib.sha256(report.onnx_path.read_bytes()).hexdigest()
    assert f"`my.onnx` (sha256 {sha})" in text and report.sha256 == sha
    assert "images without a reference mask (not used): lonely/x.dcm" in text
    assert "masks without an image (not used): n1/orphan_seg.nii.gz" in text


def test_rerun_replaces_its_own_report_only(mixed: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A rerun (here without --init) leaves no stale *_before.* files or metrics lines, keeps
    files it did not write, and does not warn that the card describes another file."""
    import json
    import shutil

    from sarcoscope.train.finetune import finetune

    out_dir = tmp_path / "out"
    shutil.copytree(mixed["tmp"] / "out", out_dir)
    report_dir = out_dir / "my-report"
    assert (report_dir / "cases_before.csv").is_file()
    first_lines = (report_dir / "metrics.jsonl").read_text().splitlines()
    (report_dir / "notes.txt").write_text("mine")
    with caplog.at_level("WARNING"):
        report = finetune(_tiny_cfg(tmp_path, steps=2), mixed["data"], init=None, out=out_dir / "my.onnx")
    assert not (report_dir / "cases_before.csv").exists() and (report_dir / "cases_after.csv").is_file()
    assert (report_dir / "notes.txt").read_text() == "mine"
    lines = [json.loads(x) for x in (report_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(first_lines) == 3 and [r["step"] for r in lines] == [1, 2]
    assert report.sha256 in report.report_path.read_text()
    assert "a fresh network" in report.report_path.read_text()
    assert not [r for r in caplog.records if "describes a different file" in r.getMessage()]


# --- review 2: geometry of NIfTI masks, validation checks, output paths


def _copy_data(mixed: dict, tmp: Path) -> Path:
    import shutil

    data = tmp / "data"
    shutil.copytree(mixed["data"], data)
    return data


@pytest.mark.parametrize("how", ["shifted", "flipped"])
def test_finetuning_refuses_a_nifti_mask_off_the_ct_grid(mixed: dict, tmp_path: Path, how: str) -> None:
    """Only evaluate checked where a NIfTI mask's header puts it; fine-tuning trained on a shifted
    or flipped mask silently (same shape, other anatomy)."""
    import nibabel as nib

    from sarcoscope.errors import GeometryError
    from sarcoscope.train.finetune import finetune

    data = _copy_data(mixed, tmp_path)
    mask = next(m for m in (data / "n1").glob("*.nii.gz") if not m.name.startswith("orphan"))
    img = nib.load(str(mask))
    affine = img.affine.copy()
    if how == "shifted":
        affine[0, 3] += 25.0  # 10 pixels of 2.5 mm
    else:
        affine[1, 1] = -affine[1, 1]  # same voxels, the header says the rows run the other way
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), str(mask))
    with pytest.raises(GeometryError, match=rf"{mask.name}: the reference does not lie on the grid of the CT "
                       rf".*n1.*resample it onto the CT's grid"):
        finetune(_tiny_cfg(tmp_path), data, init=None, out=tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_validation_is_checked_often_enough_to_choose(mixed: dict, tmp_path: Path) -> None:
    """With shipped.toml's val_every (500) a 300-step fine-tune was checked once, at its end, yet the
    report said the weights were "the best" on the validation slices. Now checked every steps // 10."""
    import json

    from sarcoscope.train.config import load_config
    from sarcoscope.train.finetune import finetune

    shipped_val_every = load_config(REPO_ROOT / "configs" / "shipped.toml").train.val_every
    assert shipped_val_every == 500
    cfg = _tiny_cfg(tmp_path, steps=20)
    cfg = replace(cfg, train=replace(cfg.train, val_every=shipped_val_every))
    report = finetune(cfg, mixed["data"], init=mixed["init"], out=tmp_path / "v.onnx", value_map=ALBERTA)
    report_dir = report.report_path.parent
    steps = [json.loads(x)["step"] for x in (report_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 21, 2))
    assert "over 10 checks (every 2 steps and at the last step run); the exported weights are those of step" \
        in report.selection
    assert report.selection in report.report_path.read_text()
    card = json.loads((tmp_path / "v.json").read_text())
    assert card["validation_checks"] == 10 and card["checkpoint_step"] in steps


def test_a_time_guard_stop_says_what_was_exported(mixed: dict, tmp_path: Path) -> None:
    from sarcoscope.train.finetune import finetune

    cfg = _tiny_cfg(tmp_path, steps=20)
    cfg = replace(cfg, train=replace(cfg.train, val_every=500, max_minutes=0.0))
    report = finetune(cfg, mixed["data"], init=mixed["init"], out=tmp_path / "t.onnx", value_map=ALBERTA)
    assert "over 1 check, at the last step run: the exported weights are the last ones" in report.selection
    assert "the run stopped at step 1 of 20 (max_minutes 0) and was checked there" in report.selection


def _train_cli(tmp: Path, data: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(REPO_ROOT / "configs" / "tiny.toml"), "--data", str(data), *extra]


def test_output_problems_are_export_errors_before_any_data_is_read(tmp_path: Path, capsys) -> None:
    """A file named m-report beside --out m.onnx was an internal error (exit 70) after the training;
    --out equal to --init overwrote the init model and its card. The --data folder here does not
    exist: the output error coming first shows that outputs are checked before the data are read."""
    from sarcoscope.cli.main import main

    missing = tmp_path / "no-such-data"
    (tmp_path / "m-report").write_text("mine")
    assert main(_train_cli(tmp_path, missing, "--out", str(tmp_path / "m.onnx"))) == 5
    err = capsys.readouterr().err
    assert f"{tmp_path / 'm-report'} is a file, but the fine-tuning report is written into a folder" in err
    assert "Traceback" not in err and "internal error" not in err
    assert (tmp_path / "m-report").read_text() == "mine"

    init = _init_model(tmp_path / "init.onnx")
    before = init.read_bytes()
    alias = tmp_path / "sub" / ".." / "init.onnx"
    (tmp_path / "sub").mkdir()
    assert main(_train_cli(tmp_path, missing, "--init", str(init), "--out", str(alias))) == 5
    err = capsys.readouterr().err
    assert f"--out {alias} is the --init model {init}: fine-tuning would overwrite it" in err
    assert init.read_bytes() == before

    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(_train_cli(tmp_path, missing, "--out", str(afile / "m.onnx"))) == 5
    assert f"{afile} is a file, not a folder, so {afile} cannot be created" in capsys.readouterr().err


def test_a_failed_write_is_an_export_error(mixed: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import sarcoscope.train.finetune as ft
    from sarcoscope.errors import ExportError

    def full_disk(model, spec, path, **kw):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ft, "export_onnx", full_disk)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=rf"{out.name}: cannot write the fine-tuned model or its report \(No space "
                       rf"left on device: {out}\)") as info:
        ft.finetune(_tiny_cfg(tmp_path, steps=1), mixed["data"], init=None, out=out, value_map=ALBERTA)
    assert info.value.exit_code == 5
