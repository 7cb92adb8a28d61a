"""End-to-end PACS tests against a real Orthanc and dcmtk (see tests/integration/orthanc.py).

Find, retrieve (C-GET, C-MOVE, WADO-RS), analyse, send back (C-STORE, STOW-RS); then fetch the
SEG, SR and key image from Orthanc and check them independently (highdicom masks, dsrdump
numbers). Faults: PACS down, wrong AE titles, no CT in the study, interrupted transfer, the
same study twice. The node (receiver + queue) has its own module, test_pacs_node.py.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from sarcoscope.errors import L3NotFound, PacsError
from sarcoscope.pacs import dimse
from sarcoscope.pacs.config import LocalNode, PacsNode
from tests.conftest import REAL_CT, require
from tests.integration.orthanc import (  # noqa: F401 - fixtures
    OUR_AET,
    OrthancServer,
    free_port,
    orthanc,
    pacs_peers,
    prepare_liver_dome,
    storescu,
    write_phantom_series,
    write_phantom_study,
)

pytestmark = pytest.mark.pacs


@pytest.fixture(scope="module")
def node(orthanc: OrthancServer) -> PacsNode:
    return PacsNode("orthanc", orthanc.aet, "127.0.0.1", orthanc.dicom_port,
                    dicomweb_url=orthanc.dicomweb_url, timeout_s=15)


@pytest.fixture
def local(orthanc: OrthancServer, tmp_path: Path) -> LocalNode:
    return LocalNode(ae_title=OUR_AET, port=orthanc.receiver_port, work_dir=tmp_path / "work")


@pytest.fixture(scope="module")
def liver(orthanc: OrthancServer, tmp_path_factory) -> dict:
    src = REAL_CT / "ts-liver-dome-j2k"
    require(src.is_dir(), f"real CT series {src}")
    study, series = generate_uid(), generate_uid()
    files = prepare_liver_dome(src, tmp_path_factory.mktemp("liver"), study_uid=study, series_uid=series)
    storescu(orthanc, files, keep_syntax=True)
    return {"study": study, "series": series, "n": len(files)}


def _load_phantom(orthanc: OrthancServer, tmp: Path, accession: str, **kw) -> dict:
    files, study, series = write_phantom_series(tmp, accession=accession, **kw)
    storescu(orthanc, files)
    return {"study": study, "series": series, "n": len(files)}


def _settings(slices: str | None):
    from sarcoscope.settings import AnalysisSettings

    return AnalysisSettings(slices=slices, segmenter="baseline")


def _ours(orthanc: OrthancServer, study: str) -> list[dict]:
    return [s for s in orthanc.series_in_study(study) if s["manufacturer"] == "sarcoscope"]


def _fetch(orthanc: OrthancServer, study: str, modality: str, dest: Path) -> Path:
    series = [s for s in _ours(orthanc, study) if s["modality"] == modality]
    assert len(series) == 1, f"expected one {modality} series, found {series}"
    assert len(series[0]["instances"]) == 1
    return orthanc.instance_file(series[0]["instances"][0], dest)


def check_results_in_pacs(orthanc: OrthancServer, run, tmp: Path) -> None:
    """Independent checks of what Orthanc holds: SEG masks (highdicom), SR numbers (dsrdump), SC."""
    import highdicom as hd

    from sarcoscope.export.dicom_seg import display_to_source

    ours = _ours(orthanc, run.study_uid)
    assert sorted(s["modality"] for s in ours) == ["OT", "SEG", "SR"]
    seg = hd.seg.segread(_fetch(orthanc, run.study_uid, "SEG", tmp / "seg.dcm"))
    assert seg.StudyInstanceUID == run.study_uid
    for lm in run.result.label_maps:
        src_uid = run.result.volume.slice_uids[lm.slice_index]
        got = np.asarray(seg.get_pixels_by_source_instance([src_uid], combine_segments=True, relabel=False)[0])
        header = dcmread(run.result.volume.slice_files[lm.slice_index], stop_before_pixels=True) \
            if Path(run.result.volume.slice_files[lm.slice_index]).exists() else None
        if header is not None:
            np.testing.assert_array_equal(got, display_to_source(lm.labels, run.result.volume.affine, lm.slice_index, header))
        # These series are stored anterior-up, patient-right-left (IOP 1,0,0,0,1,0): the stored
        # grid is the display grid, so the PACS copy must equal our label map as it is.
        np.testing.assert_array_equal(got, lm.labels)
        assert set(np.unique(got)) <= {0, 1, 2, 3, 4} and (got == 1).sum() > 100
    sr_path = _fetch(orthanc, run.study_uid, "SR", tmp / "sr.dcm")
    dump = subprocess.run(["dsrdump", str(sr_path)], capture_output=True, check=True).stdout.decode("latin-1")
    m = run.result.measurements[0]
    areas = [float(v) for v in re.findall(r'NUM:\(,,"Area"\)="([-0-9.]+)"', dump)]
    expected = [m.tissues[k].area_cm2 for k in ("muscle", "imat", "vat", "sat")]
    assert areas[:4] == pytest.approx(expected, rel=1e-6)
    assert "Referenced Segmentation Frame" in dump and "sarcoscope" in dump
    sc = dcmread(_fetch(orthanc, run.study_uid, "OT", tmp / "sc.dcm"))
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and "NOT FOR DIAGNOSTIC USE" in sc.ImageComments
    assert sc.StudyInstanceUID == run.study_uid


# ---------------------------------------------------------------------------------- happy paths
def test_echo_and_find(node: PacsNode, liver: dict, orthanc: OrthancServer) -> None:
    from sarcoscope.pacs.web import qido_series, qido_studies

    assert dimse.echo(node, OUR_AET) > 0
    by_acc = dimse.find_studies(node, OUR_AET, dimse.StudyQuery(accession="LD0001"))
    assert [s.study_uid for s in by_acc] == [liver["study"]]
    assert by_acc[0].modalities == ("CT",) and by_acc[0].n_instances == liver["n"]
    by_pid = dimse.find_studies(node, OUR_AET, dimse.StudyQuery(patient_id="LIVERDOME", date_from="20200101",
                                                                modality="CT"))
    assert [s.study_uid for s in by_pid] == [liver["study"]]
    assert dimse.find_studies(node, OUR_AET, dimse.StudyQuery(date_to="19991231")) == []
    web = qido_studies(node, dimse.StudyQuery(accession="LD0001"))
    assert [s.study_uid for s in web] == [liver["study"]]
    series = qido_series(node, liver["study"])
    assert [(s.series_uid, s.modality, s.n_instances) for s in series] == [(liver["series"], "CT", liver["n"])]


def test_cli_echo_find(node: PacsNode, liver: dict, orthanc: OrthancServer, tmp_path: Path, capsys) -> None:
    from sarcoscope.cli.main import main

    cfg = tmp_path / "sarcoscope.toml"
    cfg.write_text(
        f'[local]\nae_title = "{OUR_AET}"\nwork_dir = "{tmp_path / "w"}"\n'
        f'[nodes.pacs]\nae_title = "{orthanc.aet}"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n'
        f'dicomweb_url = "{orthanc.dicomweb_url}"\n'
    )
    assert main(["pacs", "echo", "pacs", "--config", str(cfg)]) == 0
    assert main(["pacs", "find", "pacs", "--config", str(cfg), "--accession", "LD0001", "--modality", "CT"]) == 0
    out = capsys.readouterr().out
    assert "C-ECHO" in out and "OK" in out and "LD0001" in out and "LIVERDOME" in out
    audit = (tmp_path / "w" / "audit.jsonl").read_text()
    assert '"event": "find"' in audit and "LD0001" not in audit and "LIVERDOME" not in audit
    assert main(["pacs", "echo", "nowhere", "--config", str(cfg)]) == 2
    assert "'nowhere' is not configured" in capsys.readouterr().err


def test_cli_analyze_exit_codes(liver: dict, orthanc: OrthancServer, tmp_path: Path, capsys) -> None:
    from sarcoscope.cli.main import main

    cfg = tmp_path / "sarcoscope.toml"
    cfg.write_text(
        f'[local]\nae_title = "{OUR_AET}"\nwork_dir = "{tmp_path / "w"}"\n'
        f'[nodes.pacs]\nae_title = "{orthanc.aet}"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n'
    )
    before = orthanc.series_in_study(liver["study"])
    args = ["pacs", "analyze", "pacs", "--config", str(cfg), "--accession", "LD0001", "--segmenter", "baseline"]
    assert main(args) == 3  # auto: L3 is not in this series
    assert "L3" in capsys.readouterr().err
    assert orthanc.series_in_study(liver["study"]) == before
    assert main(args + ["--slices", "10", "--out", str(tmp_path / "out")]) == 0  # analysed, not sent
    out = capsys.readouterr().out
    assert "seg.dcm" in out and "sr.dcm" in out and "keyimage.dcm" in out
    assert orthanc.series_in_study(liver["study"]) == before
    assert main(["pacs", "analyze", "pacs", "--config", str(cfg)]) == 2  # neither --study nor --accession


def test_liver_auto_reports_l3_not_found_and_sends_nothing(node, local, liver, orthanc, tmp_path) -> None:
    from sarcoscope.cli.pacs import run_pacs_analysis

    before = orthanc.series_in_study(liver["study"])
    with pytest.raises(L3NotFound, match=r"L3 (not found|is not in the scan).*--slices"):
        run_pacs_analysis(node, local, _settings(None), accession="LD0001", via="get", send_back=True,
                          out_dir=tmp_path / "out")
    assert orthanc.series_in_study(liver["study"]) == before  # nothing sent
    assert not (tmp_path / "out" / "seg.dcm").exists()
    assert not list((local.work_dir / "images").rglob("*.dcm"))  # retrieved images cleaned up
    from sarcoscope.pacs.audit import read_audit

    events = read_audit(local.audit_path)
    assert [e["event"] for e in events][-3:] == ["request", "retrieved", "failed"]  # one outcome
    assert events[-1]["error_type"] == "L3NotFound" and events[-1]["study_uid"] == liver["study"]


def test_liver_explicit_slice_cget_cstore(node, local, liver, orthanc, tmp_path) -> None:
    from sarcoscope.cli.pacs import run_pacs_analysis
    from sarcoscope.pacs.audit import read_audit

    run = run_pacs_analysis(node, local, _settings("10"), accession="LD0001", via="get", send_back=True,
                            out_dir=tmp_path / "out", keep_images=True)
    assert run.n_retrieved == liver["n"] and run.series_uid == liver["series"]
    # the JPEG 2000 pixels came as stored (negotiated, not transcoded)
    assert dcmread(run.result.volume.slice_files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert set(run.timings_s) == {"query", "retrieve", "analyse", "send"}
    check_results_in_pacs(orthanc, run, tmp_path)
    records = read_audit(local.audit_path)
    assert [e["event"] for e in records] == ["request", "retrieved", "analysed", "sent"]
    assert records[0]["calling_aet"] == local.ae_title and len(records[0]["accession_hmac"]) == 16
    assert records[-1]["sop_instance_uids"] == run.stored_uids and records[-1]["via"] == "store"
    text = local.audit_path.read_text()
    assert "LIVERDOME" not in text and "LD0001" not in text


def _ts(run) -> str:
    return str(dcmread(run.result.volume.slice_files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID)


def test_phantom_cmove_and_stow(node, local, orthanc, tmp_path) -> None:
    from sarcoscope.cli.pacs import run_pacs_analysis

    ph = write_phantom_study(tmp_path / "ph", seed=5, transfer_syntax="rle", accession="PH-MOVE")
    storescu(orthanc, ph["files"])
    run = run_pacs_analysis(node, local, _settings(str(ph["l3_index"])), study_uid=ph["study"], via="move",
                            send_back=True, send_via="stow", out_dir=tmp_path / "out", keep_images=True)
    assert run.n_retrieved == ph["n"] and _ts(run) == "1.2.840.10008.1.2.5"  # RLE kept, not transcoded
    check_results_in_pacs(orthanc, run, tmp_path)


def test_phantom_wado_and_cstore_twice_is_idempotent(node, local, orthanc, tmp_path) -> None:
    from sarcoscope.cli.pacs import run_pacs_analysis

    ph = write_phantom_study(tmp_path / "ph", seed=6, transfer_syntax="jpegls", accession="PH-WADO")
    storescu(orthanc, ph["files"])
    settings = _settings(str(ph["l3_index"]))
    first = run_pacs_analysis(node, local, settings, accession="PH-WADO", via="wado", send_back=True,
                              out_dir=tmp_path / "o1", keep_images=True)
    assert _ts(first) == "1.2.840.10008.1.2.4.80"  # JPEG-LS lossless as stored
    second = run_pacs_analysis(node, local, settings, accession="PH-WADO", via="get", send_back=True,
                               out_dir=tmp_path / "o2", keep_images=True)
    assert _ts(second) == "1.2.840.10008.1.2.4.80"
    assert first.stored_uids == second.stored_uids  # same analysis, same UIDs
    check_results_in_pacs(orthanc, second, tmp_path)  # exactly one SEG, SR, SC series of one instance


def test_reanalysis_with_other_patient_data_gets_new_uids_in_the_pacs(node, local, orthanc, tmp_path) -> None:
    """Re-running with another height/sex changes SMI and flags: the second SR must not reuse the
    first one's UIDs (Orthanc keeps the first instance stored under a UID), so the PACS ends up
    holding both reports, each with its own SMI, and a third identical run adds nothing."""
    from dataclasses import replace

    from sarcoscope.cli.pacs import run_pacs_analysis

    ph = write_phantom_study(tmp_path / "ph", seed=7, accession="PH-REDO")
    storescu(orthanc, ph["files"])
    base = _settings(str(ph["l3_index"]))
    tall = replace(base, height_cm=190.0, sex="F")
    short = replace(base, height_cm=150.0, sex="M")
    runs = [run_pacs_analysis(node, local, st, study_uid=ph["study"], via="get", send_back=True,
                              out_dir=tmp_path / f"o{i}", keep_images=True) for i, st in enumerate((tall, short, short))]
    smi = [r.result.measurements[0].smi_cm2_m2 for r in runs]
    assert smi[0] != pytest.approx(smi[1])
    assert not set(runs[0].stored_uids) & set(runs[1].stored_uids)  # content changed: all UIDs new
    assert runs[1].stored_uids == runs[2].stored_uids  # identical re-run: the same UIDs
    srs = [s for s in _ours(orthanc, ph["study"]) if s["modality"] == "SR"]
    assert len(srs) == 2 and all(len(s["instances"]) == 1 for s in srs)
    in_pacs = []
    for n, s in enumerate(srs):
        dump = subprocess.run(["dsrdump", str(orthanc.instance_file(s["instances"][0], tmp_path / f"sr{n}.dcm"))],
                              capture_output=True, check=True).stdout.decode("latin-1")
        in_pacs += [float(v) for v in re.findall(r'NUM:\(,,"Skeletal muscle index"\)="([-0-9.]+)"', dump)]
    assert sorted(in_pacs) == pytest.approx(sorted(smi[:2]), rel=1e-6)


def test_cli_auto_l3_phantom_study_send_back(orthanc: OrthancServer, tmp_path: Path, capsys) -> None:
    """`sarcoscope pacs analyze NODE --accession A --send-back` with no --slices: the L3 finder
    picks the slice on the retrieved study (within one slice of the phantom's true mid-L3), and
    SEG/SR/SC of that slice land in Orthanc.

    The study is the phantom's "abdomen" coverage (mid-T10 to mid-S1 with 12 thoracic vertebrae;
    60 slices of 4.6 mm, 256×256), written by the phantom stage, true L3 from its spine: the
    finder needs T12 or the sacrum to count vertebrae, so ``make_demo_study`` (L2–L4 only, no
    anchor) correctly ends in "L3 not found" and cannot serve here."""
    import json

    import highdicom as hd

    from sarcoscope.cli.main import main

    ph = write_phantom_study(tmp_path / "ph", seed=0, coverage="abdomen", n_slices=60, accession="PH-AUTO")
    study, truth = ph["study"], ph["l3_index"]
    assert truth is not None
    storescu(orthanc, ph["files"])
    cfg = tmp_path / "sarcoscope.toml"
    cfg.write_text(
        f'[local]\nae_title = "{OUR_AET}"\nwork_dir = "{tmp_path / "w"}"\n'
        f'[nodes.pacs]\nae_title = "{orthanc.aet}"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n'
    )
    out = tmp_path / "out"
    assert main(["pacs", "analyze", "pacs", "--config", str(cfg), "--accession", "PH-AUTO", "--send-back",
                 "--segmenter", "baseline", "--out", str(out)]) == 0, capsys.readouterr().err
    doc = json.loads((out / "result.json").read_text())
    assert doc["slice_selection"]["method"] == "auto" and doc["source"]["study_instance_uid"] == study
    assert abs(doc["l3"]["index"] - truth) <= 1, (doc["l3"]["index"], truth)
    ours = _ours(orthanc, study)
    assert sorted(s["modality"] for s in ours) == ["OT", "SEG", "SR"]
    assert all(len(s["instances"]) == 1 for s in ours)
    # the SEG in Orthanc segments exactly the slices chosen automatically
    seg = hd.seg.segread(_fetch(orthanc, study, "SEG", tmp_path / "seg.dcm"))
    analysed = {s["sop_instance_uid"] for s in doc["slices"]}
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == analysed
    # the SR in Orthanc carries result.json's muscle area for the L3 slice (dsrdump, independent)
    dump = subprocess.run(["dsrdump", str(_fetch(orthanc, study, "SR", tmp_path / "sr.dcm"))],
                          capture_output=True, check=True).stdout.decode("latin-1")
    areas = [float(v) for v in re.findall(r'NUM:\(,,"Area"\)="([-0-9.]+)"', dump)]
    assert areas[0] == pytest.approx(doc["slices"][0]["tissues"]["muscle"]["area_cm2"], rel=1e-3)


# ---------------------------------------------------------------------------------- faults
def test_pacs_down(local) -> None:
    dead = PacsNode("down", "ORTHANC", "127.0.0.1", free_port(), timeout_s=3)
    with pytest.raises(PacsError, match=r"cannot connect to PACS down = ORTHANC@127\.0\.0\.1:\d+.*PACS is running"):
        dimse.echo(dead, OUR_AET)


def test_wrong_called_ae_title(node, orthanc) -> None:
    from dataclasses import replace

    # Orthanc rejects it, or now and then drops the association unanswered: either way the
    # message must point at the node's ae_title
    with pytest.raises(PacsError, match=r"(rejected the association.*called AE title is not recognised|closed "
                                        r"the association .* without answering).*'WRONGAE'"):
        dimse.echo(replace(node, ae_title="WRONGAE"), OUR_AET)


def test_unknown_calling_ae_title(node, liver) -> None:
    # The test Orthanc answers registered AE titles only (DicomAlwaysAllow* false), so it rejects
    # the association itself (now and then it drops the connection instead of sending the
    # rejection: the message then says so); with DicomAlwaysAllowEcho true it would abort at
    # C-FIND instead. Either way the user is told to register the calling AE title.
    with pytest.raises(PacsError, match=r"(rejected the association from 'STRANGER'.*calling AE title is not "
                                        r"recognised|closed the association from 'STRANGER' without answering)"
                                        r".*register calling AE 'STRANGER'"):
        dimse.find_studies(node, "STRANGER", dimse.StudyQuery(accession="LD0001"))


def test_study_without_ct(node, local, orthanc, tmp_path) -> None:
    from sarcoscope.cli.pacs import run_pacs_analysis

    mr = _load_phantom(orthanc, tmp_path / "mr", "MR0001", modality="MR", n_slices=2, distinct_slices=1)
    with pytest.raises(PacsError, match=rf"study {mr['study']} has no CT series.*MR .*2 images"):
        run_pacs_analysis(node, local, _settings("0"), accession="MR0001", send_back=True)
    assert _ours(orthanc, mr["study"]) == []


def test_scout_with_more_images_is_not_chosen(node, local, orthanc, tmp_path) -> None:
    from sarcoscope.cli.pacs import run_pacs_analysis

    # an unlabelled scout series (description says nothing) with more images than the axial one
    _, study, scout = write_phantom_series(tmp_path / "scout", n_slices=6, distinct_slices=1, accession="SC0001",
                                           image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), description="ABDOMEN")
    storescu(orthanc, sorted((tmp_path / "scout").glob("*.dcm")))
    files, _, axial = write_phantom_series(tmp_path / "axial", n_slices=3, distinct_slices=3, study_uid=study,
                                           accession="SC0001")
    storescu(orthanc, files)
    run = run_pacs_analysis(node, local, _settings("1"), accession="SC0001", via="get", out_dir=tmp_path / "o")
    assert run.series_uid == axial and run.n_retrieved == 3


class _CuttingProxy:
    """TCP proxy to Orthanc that cuts the connection after ``limit`` bytes from the server."""

    def __init__(self, target_port: int, limit: int) -> None:
        self.target_port, self.limit = target_port, limit
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.limit), daemon=True).start()

    @staticmethod
    def _pump(src, dst, limit) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
                if limit is not None and sent >= limit:
                    break
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.sock.close()


def test_interrupted_transfer_then_retry(node, liver, tmp_path) -> None:
    from dataclasses import replace

    proxy = _CuttingProxy(node.port, limit=600_000)  # ~4 of the 20 J2K images
    try:
        cut = replace(node, port=proxy.port, timeout_s=5)
        with pytest.raises(PacsError, match=r"C-GET.*(interrupted transfer|aborted)"):
            dimse.get_series(cut, OUR_AET, liver["study"], liver["series"], tmp_path / "x", expected=liver["n"])
    finally:
        proxy.close()
    partial = list((tmp_path / "x").glob("*.dcm"))
    assert 0 < len(partial) < liver["n"]
    stats = dimse.get_series(node, OUR_AET, liver["study"], liver["series"], tmp_path / "x", expected=liver["n"])
    assert stats.n_files == liver["n"] and len(list((tmp_path / "x").glob("*.dcm"))) == liver["n"]


def test_dicomweb_errors_carry_http_status(node, liver) -> None:
    from dataclasses import replace

    from sarcoscope.pacs import web

    wrong = replace(node, dicomweb_url=node.dicomweb_url + "-nope")
    with pytest.raises(PacsError, match=r"QIDO-RS study search on .*dicom-web-nope failed: HTTP 404") as info:
        web.qido_studies(wrong, dimse.StudyQuery(accession="LD0001"))
    assert info.value.http_status == 404
    down = replace(node, dicomweb_url=f"http://127.0.0.1:{free_port()}/dicom-web")
    with pytest.raises(PacsError, match=r"cannot reach http://127\.0\.0\.1:\d+/dicom-web"):
        web.qido_series(down, liver["study"])
    no_url = replace(node, dicomweb_url=None)
    with pytest.raises(PacsError, match=r"has no dicomweb_url"):
        web.wado_series(no_url, liver["study"], liver["series"], Path("unused"))
