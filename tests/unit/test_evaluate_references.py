"""`sarcoscope evaluate --references` with DICOM SEG (third-party and our own) and per-class NIfTI masks.

A 3-slice phantom CT is written feet-first (stored columns run to the patient's right, so the
stored grid is flipped against display order): masks must be placed geometrically to agree.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sarcoscope.cli.main import main
from sarcoscope.errors import InputError
from sarcoscope.tissues import Tissue
from sarcoscope.train.annotations import load_reference
from sarcoscope.types import CTVolume

SNOMED_TISSUE = ("85756007", "SCT", "Tissue")


@dataclass(frozen=True)
class Study:
    folder: Path
    files: list[Path]
    volume: CTVolume
    truth: np.ndarray  # display labels of every slice (same anatomy on each)
    pred: np.ndarray  # what the baseline segmenter finds on slice k (k order)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    from sarcoscope.io import read_ct
    from sarcoscope.phantom import make_slice, random_params, write_dicom_series
    from sarcoscope.segment.baseline import BaselineSegmenter
    from sarcoscope.types import SeriesInfo

    s = make_slice(random_params(np.random.default_rng(77), matrix=(128, 128), pixel_spacing_mm=3.0), level="L3")
    sp = s.pixel_spacing_mm
    hu = np.stack([np.round(s.hu)] * 3).astype(np.int16)
    vol = CTVolume(hu=hu, affine=np.diag([sp[1], sp[0], 3.0, 1.0]),
                   series=SeriesInfo(source_path="p", format="phantom"))
    folder = tmp_path_factory.mktemp("refs") / "ct"
    files = write_dicom_series(vol, folder, patient_position="FFS")
    volume = read_ct(folder)
    assert volume.source_grid is not None and any(volume.source_grid.flips)  # the flip is exercised
    seg = BaselineSegmenter()
    pred = np.stack([seg.segment(volume.slice_hu(k), volume.pixel_spacing_mm) for k in range(3)])
    ordered = [Path(volume.slice_files[k]) for k in range(3)]
    return Study(folder, ordered, volume, s.labels, pred)


def _descriptions(specs: list[tuple[str, tuple[str, str, str]]]):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = hd.AlgorithmIdentificationSequence(name="other tool", family=codes.cid7162.ArtificialIntelligence,
                                              version="2.1")
    return [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label,
            segmented_property_category=hd.sr.CodedConcept(*SNOMED_TISSUE),
            segmented_property_type=hd.sr.CodedConcept(*code),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo,
        )
        for n, (label, code) in enumerate(specs, start=1)
    ]


#: How another tool might name our tissues: by code, by label only (generic adipose code), by both.
THIRD_PARTY = [
    ("Skeletal Muscle", ("127954009", "SCT", "Skeletal muscle tissue")),
    ("IMAT", ("55603005", "SCT", "Adipose tissue")),
    ("visceral_fat", ("725274000", "SCT", "Visceral adipose tissue")),
    ("Subcutaneous fat", ("55603005", "SCT", "Adipose tissue")),
]


def write_seg(study: Study, path: Path, labels: dict[int, np.ndarray], *, specs=THIRD_PARTY,
              seg_type: str = "BINARY", headers=None) -> Path:
    """A SEG as a third-party tool writes it: highdicom, masks on each source image's stored grid.

    ``labels[k]`` is a display label map (value n = segment n) or a stack of per-segment masks.
    """
    import highdicom as hd
    from pydicom import dcmread

    from sarcoscope.export.dicom_seg import display_to_source

    srcs, stack = [], []
    for k, lab in labels.items():
        h = (headers or [dcmread(p) for p in study.files])[k]
        srcs.append(h)
        if lab.ndim == 2 and seg_type == "LABELMAP":
            stack.append(display_to_source(lab, study.volume.affine, k, h))
        elif lab.ndim == 2:
            stored = display_to_source(lab, study.volume.affine, k, h)
            stack.append(np.stack([(stored == n) for n in range(1, len(specs) + 1)], axis=-1))
        else:
            stack.append(np.stack([display_to_source(m.astype(np.uint8), study.volume.affine, k, h) for m in lab],
                                  axis=-1))
    pixels = np.stack(stack).astype(np.float32 if seg_type == "FRACTIONAL" else np.uint8)
    seg = hd.seg.Segmentation(
        source_images=srcs, pixel_array=pixels,
        segmentation_type=seg_type,
        segment_descriptions=_descriptions(specs), series_instance_uid=hd.UID(), series_number=300,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="Other", manufacturer_model_name="tool",
        software_versions="2.1", device_serial_number="1",
    )
    seg.save_as(path)
    return path


def run_eval(tmp_path: Path, study: Study, ref: Path, *extra: str) -> tuple[int, list[dict[str, str]], str]:
    out = tmp_path / f"eval-{ref.name}"
    code = main(["evaluate", "--images", str(study.folder), "--references", str(ref), "--segmenter", "baseline",
                 "--out", str(out), *extra])
    rows = list(csv.DictReader((out / "cases_baseline.csv").open())) if code == 0 else []
    return code, rows, out.name


def assert_dice(row: dict[str, str], expected_one: bool) -> None:
    for key in ("muscle", "imat", "vat", "sat"):
        if row[f"{key}_dice"] == "":
            continue
        if expected_one:
            assert float(row[f"{key}_dice"]) == 1.0, (key, row)
            assert float(row[f"{key}_area_error_cm2"]) == 0.0
    if not expected_one:
        assert float(row["muscle_dice"]) < 1.0


def test_third_party_seg_dice_one_then_perturbed(tmp_path: Path, study: Study) -> None:
    ref = write_seg(study, tmp_path / "ref_seg.dcm", {0: study.pred[0], 2: study.pred[2]})
    code, rows, _ = run_eval(tmp_path, study, ref)
    assert code == 0
    assert [r["case"] for r in rows] == ["ct#0", "ct#2"]  # every slice the SEG covers, no other
    for row in rows:
        assert_dice(row, expected_one=True)
        assert row["reference_missing"] == ""
    worse = study.pred[0].copy()
    worse[worse == 1] = 0  # annotator left out some muscle: erase the top half of it
    keep = study.pred[0] == 1
    keep[: worse.shape[0] // 2] = False
    worse[keep] = 1
    ref2 = write_seg(study, tmp_path / "ref_seg_worse.dcm", {0: worse})
    code, rows, _ = run_eval(tmp_path, study, ref2)
    assert code == 0 and [r["case"] for r in rows] == ["ct#0"]
    assert_dice(rows[0], expected_one=False)
    assert float(rows[0]["muscle_area_error_cm2"]) > 0  # prediction larger than the smaller reference


def test_fractional_seg_and_position_fallback_read_the_truth(tmp_path: Path, study: Study) -> None:
    from pydicom import dcmread

    for seg_type in ("FRACTIONAL", "LABELMAP"):
        ref = write_seg(study, tmp_path / f"{seg_type}.dcm", {1: study.truth}, seg_type=seg_type)
        (got,) = load_reference(ref, study.volume)
        assert got.k == 1 and np.array_equal(got.labels, study.truth), seg_type
        assert got.tissues == frozenset(Tissue)
    # a SEG whose frames do not name their source images: matched by plane position instead
    ds = dcmread(ref)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    ds.save_as(tmp_path / "no_refs.dcm")
    (got,) = load_reference(tmp_path / "no_refs.dcm", study.volume)
    assert got.k == 1 and np.array_equal(got.labels, study.truth)


def test_our_own_exported_seg_is_a_reference(tmp_path: Path, study: Study) -> None:
    from pydicom import dcmread

    from sarcoscope.export.dicom_seg import write_seg as export_seg
    from sarcoscope.types import AnalysisResult, LabelMap, Measurements, SegmenterInfo, SliceChoice

    vol = study.volume
    result = AnalysisResult(
        volume=vol, choice=SliceChoice((1,), (vol.z_mm(1),), "manual"),
        label_maps=(LabelMap(study.truth.astype(np.uint8), 1, vol.pixel_spacing_mm),),
        measurements=(Measurements(1, vol.z_mm(1), {}, 0.0, 0.0),),
        segmenter=SegmenterInfo("baseline", "0.1.0"), reference="prado2008",
    )
    path = export_seg(result, tmp_path / "ours.dcm", [dcmread(study.files[1], stop_before_pixels=True)])
    (got,) = load_reference(path, vol)
    assert got.k == 1 and np.array_equal(got.labels, study.truth)


def test_unknown_segments_need_label_map(tmp_path: Path, study: Study, capsys: pytest.CaptureFixture[str]) -> None:
    anon = [(f"Segment {n}", ("85756007", "SCT", "Tissue")) for n in range(1, 5)]
    ref = write_seg(study, tmp_path / "anon.dcm", {0: study.pred[0]}, specs=anon)
    code, _, _ = run_eval(tmp_path, study, ref)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "anon.dcm" in err and "cannot tell which tissue" in err and "--label-map" in err
    code, rows, _ = run_eval(tmp_path, study, ref, "--label-map", "1=1,2=2,3=3,4=4")
    assert code == 0
    assert_dice(rows[0], expected_one=True)
    code, _, _ = run_eval(tmp_path, study, ref, "--label-map", "9=1")
    assert code == 2 and "names segment(s) [9]" in capsys.readouterr().err
    # a map that swaps two tissues really changes the result
    code, rows, _ = run_eval(tmp_path, study, ref, "--label-map", "1=1,2=2,3=4,4=3")
    assert code == 0 and float(rows[0]["vat_dice"]) < 0.5


def test_seg_errors(tmp_path: Path, study: Study, capsys: pytest.CaptureFixture[str]) -> None:
    from sarcoscope.phantom import write_dicom_series

    # overlapping segments of different tissues
    specs = THIRD_PARTY[:1] + [("SAT", ("725273006", "SCT", "Subcutaneous adipose tissue"))]
    lab = study.pred[0]
    ref = write_seg(study, tmp_path / "lap.dcm", {0: np.stack([lab == 1, (lab == 4) | (lab == 1)])}, specs=specs)
    with pytest.raises(InputError, match=r"lap\.dcm: segments 1 'Skeletal Muscle'.* and 2 'SAT'.* overlap"):
        load_reference(ref, study.volume)
    # frames on another pixel grid than the CT's
    from pydicom import dcmread

    ds = dcmread(write_seg(study, tmp_path / "grid.dcm", {0: study.pred[0]}))
    ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = [2.0, 2.0]
    ds.save_as(tmp_path / "grid.dcm")
    with pytest.raises(InputError, match=r"grid\.dcm: its frames are not on the CT's pixel grid .*2\.0x2\.0 mm"):
        load_reference(tmp_path / "grid.dcm", study.volume)
    # the same images re-exported with new UIDs: the SEG refers to images that are not there
    other = tmp_path / "other_ct"
    write_dicom_series(CTVolume(hu=study.volume.hu, affine=study.volume.affine, series=study.volume.series), other)
    good = write_seg(study, tmp_path / "good.dcm", {0: study.pred[0]})
    code = main(["evaluate", "--images", str(other), "--references", str(good), "--segmenter", "baseline",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "good.dcm: none of the CT images the SEG refers to" in err
    assert "give --images the CT series" in err
    # a CT image given as the reference, and a file that is not DICOM at all
    code = main(["evaluate", "--images", str(study.folder), "--references", str(study.files[0]),
                 "--segmenter", "baseline", "--out", str(tmp_path / "o")])
    assert code == 2 and "not a Segmentation" in capsys.readouterr().err
    junk = tmp_path / "notes.txt"
    junk.write_text("muscle: 1")
    with pytest.raises(InputError, match=r"notes\.txt: unknown reference format"):
        load_reference(junk, study.volume)


def _write_mask(path: Path, mask3d: np.ndarray, volume: CTVolume) -> None:
    """A binary mask on the CT's grid, NIfTI (i, j, k) in RAS as other tools write it."""
    import nibabel as nib

    row_mm, col_mm = volume.pixel_spacing_mm
    affine = np.diag([-col_mm, -row_mm, volume.spacing_mm[0], 1.0])
    nib.save(nib.Nifti1Image(np.transpose(mask3d, (2, 1, 0)).astype(np.uint8), affine), path)


def test_per_class_mask_folder(tmp_path: Path, study: Study, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "masks"
    folder.mkdir()
    labels = np.zeros(study.volume.shape, dtype=np.uint8)
    labels[2] = study.pred[2]
    names = {Tissue.MUSCLE: "SKELETAL_MUSCLE.nii.gz", Tissue.IMAT: "imat.nii", Tissue.VAT: "VAT.nii.gz"}
    for tissue, name in names.items():  # no SAT mask: that class is not annotated
        _write_mask(folder / name, labels == int(tissue), study.volume)
    (folder / "notes.txt").write_text("ignored")
    code, rows, _ = run_eval(tmp_path, study, folder)
    assert code == 0 and [r["case"] for r in rows] == ["ct#2"]
    assert_dice(rows[0], expected_one=True)
    assert rows[0]["sat_dice"] == "" and rows[0]["sat_ref_area_cm2"] == "" and rows[0]["sat_pred_area_cm2"] != ""
    assert rows[0]["reference_missing"] == "sat"
    # perturbed muscle mask: Dice below 1
    worse = labels == 1
    worse[2, : labels.shape[1] // 2] = False
    _write_mask(folder / "SKELETAL_MUSCLE.nii.gz", worse, study.volume)
    code, rows, _ = run_eval(tmp_path, study, folder)
    assert code == 0
    assert_dice(rows[0], expected_one=False)
    # overlapping masks
    _write_mask(folder / "VAT.nii.gz", (labels == 3) | (labels == 1), study.volume)
    code, _, _ = run_eval(tmp_path, study, folder)
    err = capsys.readouterr().err
    assert code == 2 and "VAT.nii.gz: overlaps SKELETAL_MUSCLE.nii.gz" in err
    # a mask of the wrong size
    _write_mask(folder / "VAT.nii.gz", np.zeros((3, 64, 64), dtype=np.uint8), study.volume)
    code, _, _ = run_eval(tmp_path, study, folder)
    err = capsys.readouterr().err
    assert code == 2 and "VAT.nii.gz: mask of (3, 64, 64)" in err and "does not match the CT (3, 128, 128)" in err
    # a folder without any tissue-named mask, and a label map that does not apply to a folder
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "psoas.nii.gz").write_bytes(b"")
    code, _, _ = run_eval(tmp_path, study, empty)
    assert code == 2 and "no per-class mask found (files: psoas.nii.gz)" in capsys.readouterr().err
    code, _, _ = run_eval(tmp_path, study, folder, "--label-map", "1=1")
    assert code == 2 and "does not apply to a folder" in capsys.readouterr().err


def test_per_class_mask_off_the_ct_grid_is_refused(tmp_path: Path, study: Study,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """One mask of a folder with the right shape but a header 30 mm away: refused, naming it and the CT."""
    import nibabel as nib

    folder = tmp_path / "masks"
    folder.mkdir()
    for tissue in Tissue:
        _write_mask(folder / f"{tissue.name.lower()}.nii.gz", study.truth[None].repeat(3, 0) == int(tissue),
                    study.volume)
    code, rows, _ = run_eval(tmp_path, study, folder)
    assert code == 0 and len(rows) == 3  # on the grid (the feet-first CT's stored flip included)
    sat = folder / "sat.nii.gz"
    img = nib.load(str(sat))
    moved = img.affine.copy()
    moved[2, 3] += 30.0  # 10 slices of 3 mm
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), sat)
    code, _, _ = run_eval(tmp_path, study, folder)
    err = capsys.readouterr().err
    assert code == 2
    assert f"{sat}: the reference does not lie on the grid of the CT {study.folder}" in err
    assert "0.0, 0.0, 10.0 CT voxels (columns, rows, slices)" in err
