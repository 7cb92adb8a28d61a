"""Audit log and node job settlement: keyed identifier digests (per-site key), one outcome per
request, what the node's `sent` records hold, the retention rule for failed jobs, send-back
failures (refused SOP class, part-way) and credentials kept out of the log and job files.

The PACS in the send tests is a pynetdicom storage SCP on 127.0.0.1 (free port) in this process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sarcoscope.errors import ExportError, L3NotFound, PacsError
from sarcoscope.pacs.audit import AuditLog, read_audit
from sarcoscope.pacs.config import redact_url
from sarcoscope.pacs.config import LocalNode, PacsNode

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
#: The locator's real message (locate/finder.py) for a study without L3.
L3_MESSAGE = ("L3 not found: the scan covers z -456…-382 mm (12 slices, 73 mm), too short to tell vertebrae "
              "apart. Give the slice to analyse with --slices if you know it.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _result_file(path: Path, sop_class: str) -> Path:
    """A minimal DICOM object of ``sop_class`` (enough for C-STORE and for reading its UID)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.3", generate_uid(), "OT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _node(tmp_path: Path, send, process=None, **local_kw):
    from sarcoscope.pacs.node import Node

    local = LocalNode(work_dir=tmp_path / "w", send_back_to="pacs", **{"retry_base_s": 30, **local_kw})

    def default_process(folder: Path, out: Path) -> list[Path]:
        return [_result_file(out / "seg.dcm", SEG_CLASS), _result_file(out / "sr.dcm", SR_CLASS)]

    node = Node(local, process or default_process, send, AuditLog.for_local(local), send_via="store")
    return node


def _stage(node, study: str = "1.2.3") -> Path:
    """A received batch as the node stages it: staged/<job>/<study>/<series>/x.dcm."""
    job_id = node.queue.new_id()
    folder = node.staged / job_id / study
    (folder / "1.2.3.4").mkdir(parents=True)
    (folder / "1.2.3.4" / "1.2.3.4.5.dcm").write_bytes(b"CT pixels")
    node.queue.add(study, folder, job_id=job_id)
    return folder


# -- 1. keyed digests ---------------------------------------------------------------------------
def test_identifier_digests_are_keyed_per_site_stable_and_not_brute_forced(tmp_path: Path) -> None:
    site = LocalNode(work_dir=tmp_path / "site")
    a, b = AuditLog.for_local(site), AuditLog.for_local(site)  # two runs on one site
    other = AuditLog.for_local(LocalNode(work_dir=tmp_path / "other"))
    key_file = tmp_path / "site" / "audit.key"
    assert a.digest("4711234") == b.digest("4711234") and key_file.is_file()
    assert a.digest("4711234") != other.digest("4711234") and a.digest("4711234") != a.digest("4711235")
    if os.name == "posix":
        assert key_file.stat().st_mode & 0o777 == 0o600
    a.record("find", node="pacs", patient_id_hmac=a.digest("4711234"), accession_hmac="")
    rec = read_audit(site.audit_path)[-1]
    assert "4711234" not in site.audit_path.read_text()
    # the reviewer's attack (unhash.py: SHA-256 of every 7-digit number) finds nothing
    logged = rec["patient_id_hmac"]
    assert not any(hashlib.sha256(str(i).encode()).hexdigest()[:len(logged)] == logged
                   for i in range(4_700_000, 4_720_000))
    assert key_file.read_text().strip() not in repr(a)
    key_file.write_text("not hex\n")
    with pytest.raises(ExportError, match=r"audit key .*audit\.key is unreadable or not hex.*restore it from backup"):
        AuditLog.for_local(site).digest("4711234")


# -- 2. one outcome per request -----------------------------------------------------------------
def test_request_gets_exactly_one_outcome(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", key=b"k" * 32)
    with pytest.raises(PacsError):
        with log.request(node="pacs", calling_aet="SARCOSCOPE", study_uid="1.2.3", via="get"):
            raise PacsError("cannot connect to PACS pacs = ORTHANC@10.0.0.5:4242")
    with log.request(node="pacs", calling_aet="SARCOSCOPE", study_uid="", via="get") as req:
        req.outcome("sent", study_uid="1.2.9", via="store", sop_instance_uids=["1.2.9.1"])
        with pytest.raises(RuntimeError, match="already has its outcome"):
            req.outcome("failed", reason="x")
    recs = read_audit(tmp_path / "audit.jsonl")
    assert [r["event"] for r in recs] == ["request", "failed", "request", "sent"]
    assert recs[0]["calling_aet"] == "SARCOSCOPE"
    assert recs[1]["reason"].startswith("cannot connect to PACS") and recs[1]["error_type"] == "PacsError"
    assert recs[1]["study_uid"] == "1.2.3" and recs[3]["study_uid"] == "1.2.9"


def test_url_credentials_never_reach_the_log_or_job_files(tmp_path: Path) -> None:
    assert redact_url("GET https://bob:s3cret@pacs.example.org:8443/dicom-web/studies failed") == \
        "GET https://***@pacs.example.org:8443/dicom-web/studies failed"

    def send(files):
        raise PacsError("STOW-RS to https://bob:s3cret@pacs.example.org/dicom-web: HTTP 503", http_status=503)

    node = _node(tmp_path, send)
    _stage(node)
    node.run_job(node.queue.claim())
    job_json = next((tmp_path / "w" / "queue" / "pending").glob("*.json")).read_text()
    audit = node.audit.path.read_text()
    assert "s3cret" not in job_json and "s3cret" not in audit and "bob" not in audit
    assert "https://***@pacs.example.org/dicom-web: HTTP 503" in job_json


# -- 2. the node's records ------------------------------------------------------------------------
def test_node_sent_record_names_protocol_and_sop_instance_uids(tmp_path: Path) -> None:
    node = _node(tmp_path, lambda files: None, keep_results=True)  # a sender that returns nothing: UIDs from the files
    folder = _stage(node)
    node.run_job(node.queue.claim())
    recs = read_audit(node.audit.path)
    assert [r["event"] for r in recs] == ["analysed", "sent"]
    sent = recs[-1]
    result_dir = tmp_path / "w" / "results" / node.queue.jobs("done")[0].id
    from pydicom import dcmread

    expected = [str(dcmread(result_dir / n).SOPInstanceUID) for n in ("seg.dcm", "sr.dcm")]
    assert (sent["node"], sent["via"], sent["sop_instance_uids"]) == ("pacs", "store", expected)
    assert not folder.exists()


def test_sent_results_are_deleted_unless_the_site_keeps_them(tmp_path: Path) -> None:
    for keep in (False, True):
        node = _node(tmp_path / str(keep), lambda files: None, keep_results=keep)
        _stage(node)
        node.run_job(node.queue.claim())
        [done] = node.queue.jobs("done")
        assert (node.results / done.id).is_dir() is keep


# -- 3. retention of failed jobs -------------------------------------------------------------------
def test_failed_job_keeps_its_record_not_the_images_and_hints_pacs_analyze(tmp_path: Path) -> None:
    def process(folder: Path, out: Path) -> list[Path]:
        out.mkdir(parents=True)
        (out / "spine.png").write_bytes(b"png")
        raise L3NotFound(L3_MESSAGE)

    node = _node(tmp_path, lambda files: None, process=process)
    folder = _stage(node, "1.2.840.99")
    job = node.queue.claim()
    node.run_job(job)
    [failed] = node.queue.jobs("failed")
    assert not folder.exists() and not folder.parent.exists()  # staged/<job>/ gone
    assert not (tmp_path / "w" / "results" / job.id).exists()
    assert "L3 not found: the scan covers" in failed.last_error and "Give the slice" not in failed.last_error
    assert "sarcoscope pacs analyze pacs --study 1.2.840.99 --slices K --send-back" in failed.last_error
    assert failed.history[-1] == "staged images and results deleted"
    [rec] = [r for r in read_audit(node.audit.path) if r["event"] == "failed"]
    assert rec["reason"] == failed.last_error and rec["error_type"] == "L3NotFound"
    # images an older version left behind for a failed job are deleted at start-up
    left = node.staged / job.id / "1.2.840.99"
    left.mkdir(parents=True)
    node._resume_unqueued()
    assert not (node.staged / job.id).exists() and node.queue.jobs("pending") == []


# -- 4. send-back failures -----------------------------------------------------------------------
class _FakePacs:
    """Storage SCP accepting everything except (``refuse``) or failing (0xA700) the SR."""

    def __init__(self, mode: str) -> None:
        from pynetdicom import AE, StoragePresentationContexts, evt

        self.stored: list[str] = []
        ae = AE(ae_title="FAKEPACS")
        for cx in StoragePresentationContexts:
            if not (mode == "refuse" and cx.abstract_syntax == SR_CLASS):
                ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian])

        def on_store(event):
            if mode == "fail" and event.request.AffectedSOPClassUID == SR_CLASS:
                return 0xA700
            self.stored.append(str(event.request.AffectedSOPInstanceUID))
            return 0x0000

        self.port = _free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store)])
        self.node = PacsNode("pacs", "FAKEPACS", "127.0.0.1", self.port, timeout_s=5)

    def stop(self) -> None:
        self.server.shutdown()


@pytest.mark.parametrize("mode", ["refuse", "fail"])
def test_send_back_failure_is_audited_without_traceback(tmp_path: Path, mode: str, caplog) -> None:
    from sarcoscope.pacs import workflow

    pacs = _FakePacs(mode)
    try:
        node = _node(tmp_path, lambda files: workflow.send_files(pacs.node, node.local, files, "store"),
                     max_attempts=6)
        _stage(node)
        with caplog.at_level(logging.WARNING, logger="sarcoscope.pacs.node"):
            node.run_job(node.queue.claim())
    finally:
        pacs.stop()
    assert all(r.exc_info is None for r in caplog.records)  # a PacsError is a message, not a traceback
    recs = [r for r in read_audit(node.audit.path) if r["event"] in ("sent", "retry", "failed")]
    if mode == "refuse":  # permanent: failed at once, nothing sent, clear reason, images deleted
        assert pacs.stored == [] and len(node.queue.jobs("failed")) == 1
        [rec] = recs
        assert rec["event"] == "failed" and rec["attempts"] == 1 and "sent_sop_instance_uids" not in rec
        assert "does not accept" in rec["reason"] and "not retried" in rec["reason"]
    else:  # the SEG left the machine before the SR was refused: retried, and the record says what went
        [job] = node.queue.jobs("pending")
        [rec] = recs
        assert rec["event"] == "retry" and rec["sent_sop_instance_uids"] == pacs.stored and len(pacs.stored) == 1
        assert (rec["node"], rec["via"]) == ("pacs", "store") and "0xA700" in rec["reason"]
        assert Path(job.folder).exists()  # kept for the retry


def test_a_set_up_problem_is_retried_and_keeps_the_studys_images(tmp_path: Path) -> None:
    # a missing DICOMweb secret or an unreadable certificate is the node's fault, not the study's
    from sarcoscope.errors import ConfigError

    def send(files):
        raise ConfigError("[nodes.pacs.auth]: environment variable PACS_TOKEN (secret_env) is empty or not set")

    node = _node(tmp_path, send, max_attempts=2)
    _stage(node)
    node.run_job(node.queue.claim())
    [waiting] = node.queue.jobs("pending")  # retried like an outage
    node.run_job(node.queue.claim(now=waiting.not_before + 1))
    [failed] = node.queue.jobs("failed")
    assert any(h.startswith("images kept") for h in failed.history)
    assert (node.staged / failed.id).is_dir()  # the study can be run again once the set-up is fixed
    node._resume_unqueued()  # a restart keeps them too
    assert (node.staged / failed.id).is_dir()


def test_a_valueerror_mentioning_a_presentation_context_is_not_judged_by_its_words(tmp_path: Path) -> None:
    # permanence comes from what the sender knows (SendError.refused_sop_classes, status 0x0122)
    from sarcoscope.pacs.node import refuses_sop_class

    assert not refuses_sop_class(ValueError("No presentation context for 'CT Image Storage' has been accepted"))



def test_a_failed_find_is_audited_with_its_query_digest(tmp_path: Path, monkeypatch) -> None:
    # the query left the machine with a patient ID even though the PACS never answered
    from sarcoscope.cli.main import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[local]\nwork_dir = "{(tmp_path / "w").as_posix()}"\n\n'
                   '[nodes.pacs]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 9\n')
    assert main(["pacs", "find", "pacs", "--config", str(cfg), "--patient-id", "4711234"]) == 6
    records = read_audit(tmp_path / "w" / "audit.jsonl")
    assert [r["event"] for r in records] == ["request", "failed"]
    assert records[0]["action"] == "find" and len(records[0]["patient_id_hmac"]) == 16
    assert "4711234" not in (tmp_path / "w" / "audit.jsonl").read_text()
