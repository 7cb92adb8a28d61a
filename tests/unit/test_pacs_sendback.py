"""Send-back of SEG, SR and key image: result UIDs track the content, a PACS that refuses a SOP
class gets nothing, a send that fails part-way says which objects the PACS holds, and the key
image carries the same patient/study attributes as SEG and SR.

The PACS is a pynetdicom storage SCP on 127.0.0.1 (a free port) that refuses the SR's
presentation context, answers the SR with 0xA700, or aborts after the first object.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from sarcoscope.errors import PacsError
from sarcoscope.pacs.config import PacsNode
from sarcoscope.types import LabelMap, PatientInfo, SegmenterInfo
from tests.unit.test_dicom_export import make_result, write_ct_series

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _outputs(result, out: Path) -> list[Path]:
    """SEG, SR and key image of ``result`` as the CLI writes them (seg, sr, keyimage)."""
    from sarcoscope.export.dicom_seg import build_seg, save_dataset, source_headers
    from sarcoscope.export.dicom_sr import build_sr
    from sarcoscope.export.secondary_capture import build_secondary_capture

    headers = source_headers(result)
    seg = build_seg(result, headers)
    sr = build_sr(result, seg, headers)
    sc = build_secondary_capture(result, np.zeros((16, 16, 3), dtype=np.uint8), headers)
    return [save_dataset(seg, out / "seg.dcm"), save_dataset(sr, out / "sr.dcm"),
            save_dataset(sc, out / "keyimage.dcm")]


def _uids(result) -> dict[str, str]:
    """Series and instance UIDs of SEG, SR and key image (no files written)."""
    from sarcoscope.export.dicom_seg import build_seg
    from sarcoscope.export.dicom_sr import build_sr
    from sarcoscope.export.secondary_capture import build_secondary_capture

    seg = build_seg(result)
    sr = build_sr(result, seg)
    sc = build_secondary_capture(result, np.zeros((16, 16, 3), dtype=np.uint8))
    return {f"{name}-{level}": str(getattr(ds, f"{level}InstanceUID"))
            for name, ds in (("seg", seg), ("sr", sr), ("sc", sc)) for level in ("Series", "SOP")}


# -- 1. result UIDs cover every input that changes the content ---------------------------------
def _with_patient(result, **changes):
    volume = dataclasses.replace(result.volume, patient=dataclasses.replace(result.volume.patient, **changes))
    return dataclasses.replace(result, volume=volume)


def _with_one_label_changed(result):
    lm = result.label_maps[0]
    labels = lm.labels.copy()
    labels[0, 0] = 1 if labels[0, 0] != 1 else 4
    return dataclasses.replace(result, label_maps=(LabelMap(labels, lm.slice_index, lm.pixel_spacing_mm),
                                                   *result.label_maps[1:]))


def _with_smi(result, smi: float):
    m = dataclasses.replace(result.measurements[0], smi_cm2_m2=smi)
    return dataclasses.replace(result, measurements=(m, *result.measurements[1:]))


def test_result_uids_follow_the_content_and_repeat_for_an_identical_run(tmp_path: Path, monkeypatch) -> None:
    import sarcoscope.export.dicom_seg as dicom_seg

    paths, hu, affine = write_ct_series(tmp_path / "ct")
    base = make_result(paths, hu, affine)
    first = _uids(base)
    assert len(set(first.values())) == 6
    assert _uids(make_result(paths, hu, affine)) == first  # identical re-run: identical UIDs (idempotent)

    variants = {
        "height 1.50 m": _with_patient(base, height_m=1.50),
        "sex F": _with_patient(base, sex="F"),
        "weight 70 kg": _with_patient(base, weight_kg=70.0),
        "age 60": _with_patient(base, age_years=60.0),
        "reference": dataclasses.replace(base, reference="martin2013"),
        "segmenter sha256": dataclasses.replace(base, segmenter=SegmenterInfo("baseline", "0.1.0", "ab" * 32)),
        "segmenter version": dataclasses.replace(base, segmenter=SegmenterInfo("baseline", "0.2.0")),
        "segmenter name": dataclasses.replace(base, segmenter=SegmenterInfo("model", "0.1.0")),
        "post-processing": dataclasses.replace(base, segmenter=SegmenterInfo("baseline", "0.1.0", None, ("islands",))),
        "slices": make_result(paths, hu, affine, indices=(2,)),
        "one label pixel": _with_one_label_changed(base),
        "a measurement (SMI)": _with_smi(base, 41.5),
    }
    for what, variant in variants.items():
        got = _uids(variant)
        same = sorted(k for k in got if got[k] == first[k])
        assert not same, f"{what} changed the content but kept {same}"
    monkeypatch.setattr(dicom_seg, "__version__", "999.0.0")
    assert not set(_uids(base).values()) & set(first.values()), "package version must change every UID"


def test_reviewer_case_new_height_and_sex_gives_a_new_sr(tmp_path: Path) -> None:
    """The reported case: the same study re-analysed with --height-cm 150 --sex M changed SMI and
    the sarcopenia flag, so it must not reuse the first run's SR UID (the PACS would keep the old SR)."""
    import highdicom as hd

    paths, hu, affine = write_ct_series(tmp_path / "ct")
    run1 = make_result(paths, hu, affine, height_m=1.75)
    run2 = _with_patient(make_result(paths, hu, affine, height_m=1.50), sex="M")
    sr1 = dcmread(_outputs(run1, tmp_path / "r1")[1])
    sr2_path = _outputs(run2, tmp_path / "r2")[1]
    sr2 = dcmread(sr2_path)
    assert sr1.SOPInstanceUID != sr2.SOPInstanceUID and sr1.SeriesInstanceUID != sr2.SeriesInstanceUID
    smi = hd.sr.srread(sr2_path).content.get_planar_roi_measurement_groups()[0].get_measurements(
        name=hd.sr.CodedConcept("SMI", "99SARCO", "Skeletal muscle index"))
    assert smi[0].value == pytest.approx(run2.measurements[0].smi_cm2_m2)


def test_key_image_uids_depend_on_the_slice_it_shows(tmp_path: Path) -> None:
    from sarcoscope.export.secondary_capture import build_secondary_capture

    paths, hu, affine = write_ct_series(tmp_path / "ct")
    result = make_result(paths, hu, affine, indices=(0, 2))
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    default = build_secondary_capture(result, rgb)
    assert build_secondary_capture(result, rgb, shown_index=0).SOPInstanceUID == default.SOPInstanceUID
    other = build_secondary_capture(result, rgb, shown_index=2)
    assert other.SOPInstanceUID != default.SOPInstanceUID
    assert other.SeriesInstanceUID != default.SeriesInstanceUID


# -- 3. the key image carries the source's patient and study modules like SEG and SR -----------
def test_key_image_has_the_same_patient_and_study_attributes_as_seg_and_sr(tmp_path: Path) -> None:
    paths, hu, affine = write_ct_series(tmp_path / "ct")
    source = {
        "IssuerOfPatientID": "HOSP-A", "PatientAge": "064Y", "PatientSize": "1.72", "PatientWeight": "81",
        "StudyDescription": "CT ABDOMEN", "AdmittingDiagnosesDescription": "test",
    }
    for p in paths:
        ds = dcmread(p)
        for key, value in source.items():
            setattr(ds, key, value)
        ds.save_as(p)
    result = make_result(paths, hu, affine)
    seg, sr, sc = (dcmread(p) for p in _outputs(result, tmp_path / "out"))
    for key, value in source.items():
        assert str(sc.get(key, "")) == value, f"key image {key}"
        assert str(sc.get(key)) == str(seg.get(key)) == str(sr.get(key)), key
    for key in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                "StudyInstanceUID", "StudyDate", "StudyTime"):
        assert str(sc.get(key)) == str(seg.get(key)) == str(sr.get(key)), key


# -- 2. a PACS that refuses a SOP class or fails part-way ---------------------------------------
class FakePacs:
    """Storage SCP on 127.0.0.1; ``mode``: ok | refuse-sr | fail-sr | abort-after-1."""

    def __init__(self, mode: str) -> None:
        from pynetdicom import AE, StoragePresentationContexts, evt

        self.mode = mode
        self.stored: list[str] = []  # SOP class UIDs the fake stored
        self.ae = AE(ae_title="FAKEPACS")
        for cx in StoragePresentationContexts:
            if mode == "refuse-sr" and cx.abstract_syntax == SR_CLASS:
                continue
            self.ae.add_supported_context(cx.abstract_syntax, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        self._lock = threading.Lock()
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = self.server.server_address[1]

    def _on_store(self, event) -> int:
        cls = str(event.request.AffectedSOPClassUID)
        if self.mode == "fail-sr" and cls == SR_CLASS:
            return 0xA700
        with self._lock:
            self.stored.append(cls)
            n = len(self.stored)
        if self.mode == "abort-after-1" and n == 1:
            event.assoc.abort()
        return 0x0000

    def node(self) -> PacsNode:
        return PacsNode("fake", "FAKEPACS", "127.0.0.1", self.port, timeout_s=5)

    def __enter__(self) -> "FakePacs":
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.ae.shutdown()


@pytest.fixture(scope="module")
def result_files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("results")
    paths, hu, affine = write_ct_series(d / "ct")
    return _outputs(make_result(paths, hu, affine), d / "out")


def test_send_all_three(result_files: list[Path]) -> None:
    from sarcoscope.pacs import workflow
    from sarcoscope.pacs.config import LocalNode

    with FakePacs("ok") as pacs:
        uids = workflow.send_files(pacs.node(), LocalNode(), result_files, "store")
    assert uids == [str(dcmread(p).SOPInstanceUID) for p in result_files]
    assert pacs.stored == [SEG_CLASS, SR_CLASS, "1.2.840.10008.5.1.4.1.1.7"]


def test_pacs_refusing_the_sr_class_gets_nothing(result_files: list[Path]) -> None:
    from sarcoscope.pacs import dimse

    with FakePacs("refuse-sr") as pacs:
        with pytest.raises(dimse.SendError) as info:
            dimse.store_files(pacs.node(), "SARCOSCOPE", result_files)
    exc = info.value
    assert pacs.stored == []  # not even the SEG: all or nothing
    msg = str(exc)
    assert "does not accept SR (Comprehensive 3D SR Storage 1.2.840.10008.5.1.4.1.1.88.34" in msg
    assert "nothing was sent" in msg
    assert "Configure the PACS to accept storage of Comprehensive 3D SR Storage (1.2.840.10008.5.1.4.1.1.88.34) " \
           "from AE 'SARCOSCOPE'" in msg
    assert "SEG (" not in msg.split("Configure")[0]  # only the refused class is named
    assert isinstance(exc, PacsError) and exc.exit_code == 6  # a PACS error, never "internal error"
    assert exc.stored == () and exc.unconfirmed == () and not exc.partial
    assert exc.refused_sop_classes == (SR_CLASS,)
    assert [o.kind for o in exc.not_sent] == ["SEG", "SR", "key image"]


def test_sr_refused_with_a700_reports_the_stored_seg(result_files: list[Path]) -> None:
    from sarcoscope.pacs import dimse

    seg_uid = str(dcmread(result_files[0]).SOPInstanceUID)
    with FakePacs("fail-sr") as pacs:
        with pytest.raises(dimse.SendError) as info:
            dimse.store_files(pacs.node(), "SARCOSCOPE", result_files)
    exc = info.value
    assert pacs.stored == [SEG_CLASS]
    assert exc.status == 0xA700 and exc.partial
    assert exc.stored_uids == [seg_uid] and [o.kind for o in exc.stored] == ["SEG"]
    assert [o.kind for o in exc.not_sent] == ["SR", "key image"] and exc.unconfirmed == ()
    assert exc.refused_sop_classes == ()  # a failure, not a refused class: worth retrying
    msg = str(exc)
    assert "stopped at the SR (sr.dcm): DIMSE status 0xA700 (refused: out of resources)" in msg
    assert f"Stored in the PACS: SEG (seg.dcm, SOPInstanceUID {seg_uid})" in msg
    assert "not stored: SR, key image" in msg and "incomplete result set" in msg
    assert "nothing was lost" not in msg


def test_abort_after_the_first_object_does_not_claim_nothing_was_lost(result_files: list[Path]) -> None:
    from sarcoscope.pacs import dimse

    with FakePacs("abort-after-1") as pacs:
        with pytest.raises(dimse.SendError) as info:
            dimse.store_files(pacs.node(), "SARCOSCOPE", result_files)
    exc = info.value
    assert pacs.stored == [SEG_CLASS]  # the fake did store it before aborting
    msg = str(exc)
    assert "nothing was lost" not in msg.lower()
    assert "stopped at the SEG (seg.dcm): the PACS closed the association" in msg
    assert "the SEG may or may not have been stored" in msg and "not stored: SR, key image" in msg
    assert [o.kind for o in exc.unconfirmed] == ["SEG"] and exc.stored == () and exc.partial
    assert [o.kind for o in exc.not_sent] == ["SR", "key image"]


def test_an_unresolvable_host_while_running_is_a_pacs_error(monkeypatch):
    # the CLI checks the host up front; a node already running can still lose its DNS
    import socket

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from sarcoscope.errors import PacsError
    from sarcoscope.pacs import dimse
    from sarcoscope.pacs.config import PacsNode

    def no_dns(self, *a, **k):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(AE, "associate", no_dns)
    node = PacsNode(name="pacs", host="pacs.invalid", port=104, ae_title="PACS")
    with pytest.raises(PacsError, match=r"cannot reach .*Name or service not known.*host name"):
        with dimse.associate(node, "SARCOSCOPE", [dimse.build_context(Verification)]):
            pass
