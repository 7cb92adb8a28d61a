"""``sarcoscope node`` against real peers: dcmtk's storescu routes a study to our receiver, the
node analyses it and stores SEG/SR/SC into Orthanc. Security at the association (called AE,
calling-AE allow-list, peer address), a PACS outage (retry with back-off, nothing lost) and a
node killed mid-job then restarted (the job completes, exactly one result set in the PACS).
"""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sarcoscope.pacs.config import LocalNode, PacsNode
from tests.integration.orthanc import (  # noqa: F401 - fixtures
    OrthancServer,
    free_port,
    orthanc,
    pacs_peers,
    storescu,
    write_phantom_series,
)
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.pacs
NODE_AET = "SARCONODE"


def _ours(orthanc: OrthancServer, study: str) -> list[dict]:
    return [s for s in orthanc.series_in_study(study) if s["manufacturer"] == "sarcoscope"]


def _send_to_node(port: int, files, *, calling: str = "STORESCU", called: str = NODE_AET) -> subprocess.CompletedProcess:
    return subprocess.run(["storescu", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _in_process_node(local: LocalNode, target: dict):
    """Node wired like `sarcoscope node`, but with a send target the test can switch."""
    from sarcoscope.cli.pacs import analyse_folder
    from sarcoscope.pacs import workflow
    from sarcoscope.pacs.audit import AuditLog
    from sarcoscope.pacs.node import Node
    from sarcoscope.settings import AnalysisSettings

    settings = AnalysisSettings(slices="3", segmenter="baseline")
    return Node(local, lambda folder, out: analyse_folder(folder, settings, out)[1],
                lambda files: workflow.send_files(target["node"], local, files, "store"),
                AuditLog(local.audit_path))


def test_node_receives_analyses_sends_and_survives_pacs_outage(orthanc: OrthancServer, tmp_path: Path) -> None:
    from sarcoscope.pacs.audit import read_audit

    local = LocalNode(ae_title=NODE_AET, port=free_port(), work_dir=tmp_path / "node", quiet_period_s=0.5,
                      allowed_calling_aets=("STORESCU",), allowed_peers=("127.0.0.1",), retry_base_s=0.3,
                      max_attempts=10, send_back_to="orthanc")
    good = PacsNode("orthanc", orthanc.aet, "127.0.0.1", orthanc.dicom_port, timeout_s=10)
    target = {"node": PacsNode("orthanc", orthanc.aet, "127.0.0.1", free_port(), timeout_s=2)}  # PACS down
    files, study, _ = write_phantom_series(tmp_path / "ph", seed=3, accession="NODE1")
    storescu(orthanc, files)
    node = _in_process_node(local, target).start()
    try:
        # security: wrong called AE, calling AE not allowed → association rejected, nothing stored
        bad_called = _send_to_node(node.scp.port, files[:1], called="SOMEONE")
        bad_calling = _send_to_node(node.scp.port, files[:1], calling="INTRUDER")
        assert bad_called.returncode != 0 and "Called AE Title Not Recognized" in bad_called.stderr
        assert bad_calling.returncode != 0 and "Calling AE Title Not Recognized" in bad_calling.stderr
        assert node.scp.n_received == 0
        ok = _send_to_node(node.scp.port, files)
        assert ok.returncode == 0, ok.stderr
        # PACS down: the job is retried with back-off, never dropped
        _wait(lambda: any(j.last_error for j in node.queue.jobs("pending")), 60, "a failed send to be queued for retry")
        job = node.queue.jobs("pending")[0]
        assert "cannot connect to PACS" in job.last_error and job.attempts >= 1
        assert _ours(orthanc, study) == []
        target["node"] = good  # PACS back
        assert node.wait_idle(90)
        assert len(node.queue.jobs("done")) == 1
        assert sorted(s["modality"] for s in _ours(orthanc, study)) == ["OT", "SEG", "SR"]
        # the same study routed a second time: analysed again, still exactly one result set
        assert _send_to_node(node.scp.port, files).returncode == 0
        _wait(lambda: len(node.queue.jobs("done")) == 2, 60, "the second job")
    finally:
        node.stop()
    done = node.queue.jobs("done")
    assert [j.study_uid for j in done] == [study, study] and node.queue.jobs("failed") == []
    ours = _ours(orthanc, study)
    assert sorted(s["modality"] for s in ours) == ["OT", "SEG", "SR"]
    assert all(len(s["instances"]) == 1 for s in ours)
    events = [e["event"] for e in read_audit(local.audit_path)]
    assert events[0] == "node-start" and "retry" in events and events[-1] == "sent"
    assert "Phantom" not in local.audit_path.read_text() and "PHANTOM-1" not in local.audit_path.read_text()


def test_node_refuses_peer_address_not_allowed(tmp_path: Path, pacs_peers) -> None:
    local = LocalNode(ae_title=NODE_AET, port=free_port(), work_dir=tmp_path / "node",
                      allowed_peers=("10.9.9.9",))
    node = _in_process_node(local, {"node": None}).start()
    try:
        files, _, _ = write_phantom_series(tmp_path / "ph", n_slices=1, distinct_slices=1)
        res = _send_to_node(node.scp.port, files)
        assert res.returncode != 0 and re.search(r"Association (Rejected|Request Failed)", res.stderr)
        assert node.scp.n_received == 0 and node.scp.n_refused == 1
    finally:
        node.stop()


def _node_process(cfg: Path, log: Path) -> subprocess.Popen:
    code = "import sys; from sarcoscope.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, "-v", "node", "--config", str(cfg), "--slices", "3", "--segmenter", "baseline"],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=REPO_ROOT,
    )


def test_node_killed_mid_job_then_restarted(orthanc: OrthancServer, tmp_path: Path) -> None:
    port = free_port()
    work = tmp_path / "node"
    cfg = tmp_path / "sarcoscope.toml"
    cfg.write_text(
        f'[local]\nae_title = "{NODE_AET}"\nport = {port}\nwork_dir = "{work}"\nquiet_period_s = 0.5\n'
        f'send_back_to = "orthanc"\nallowed_calling_aets = ["STORESCU"]\nretry_base_s = 0.5\n'
        f'[nodes.orthanc]\nae_title = "{orthanc.aet}"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n'
    )
    files, study, _ = write_phantom_series(tmp_path / "ph", seed=4, accession="NODE2")
    storescu(orthanc, files)
    log = tmp_path / "node.log"
    proc = _node_process(cfg, log)
    try:
        _wait(lambda: _port_open(port), 60, "the node to listen")
        assert _send_to_node(port, files).returncode == 0
        _wait(lambda: list((work / "queue" / "running").glob("*.json")), 60, "the job to start")
        proc.send_signal(signal.SIGKILL)  # killed in the middle of the job
        proc.wait(timeout=10)
        assert list((work / "queue" / "running").glob("*.json"))  # the job is still on disk
        proc = _node_process(cfg, log)
        _wait(lambda: list((work / "queue" / "done").glob("*.json")), 90, "the resumed job to complete")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    done = [json.loads(p.read_text()) for p in (work / "queue" / "done").glob("*.json")]
    assert len(done) == 1 and done[0]["study_uid"] == study
    assert any("recovered after restart" in h for h in done[0]["history"])
    ours = _ours(orthanc, study)
    assert sorted(s["modality"] for s in ours) == ["OT", "SEG", "SR"]
    assert all(len(s["instances"]) == 1 for s in ours)  # exactly one result set
    assert not (work / "incoming" / study).exists()  # received images removed once done


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------------- quiet period
def _recording_node(tmp_path: Path, quiet_period_s: float, gate=None):
    """A node whose 'analysis' records which instances each job saw (the SOP UIDs on disk) and
    optionally waits on ``gate`` (to keep a job running while more images arrive)."""
    from sarcoscope.pacs.node import Node

    seen: list[set[str]] = []

    def process(folder: Path, out: Path) -> list[Path]:
        seen.append({p.stem for p in Path(folder).rglob("*.dcm")})
        if gate is not None:
            assert gate.wait(60), "test gate never opened"
        return []

    local = LocalNode(ae_title=NODE_AET, port=free_port(), work_dir=tmp_path / "node", quiet_period_s=quiet_period_s)
    return Node(local, process, lambda files: None), seen


def _sops(files) -> set[str]:
    from pydicom import dcmread

    return {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def test_quiet_period_two_bursts_closer_than_it_make_one_job(tmp_path: Path, pacs_peers) -> None:
    """Instances arriving less than ``quiet_period_s`` after the previous one belong to the same
    batch: one job, covering every instance of both bursts."""
    quiet_s = 1.5
    node, seen = _recording_node(tmp_path, quiet_s)
    files, study, _ = write_phantom_series(tmp_path / "ph", n_slices=7, distinct_slices=1)
    node.start()
    try:
        assert _send_to_node(node.scp.port, files[:4]).returncode == 0
        t_first_done = time.monotonic()
        time.sleep(0.3)
        assert _send_to_node(node.scp.port, files[4:]).returncode == 0
        gap_bound_s = time.monotonic() - t_first_done  # ≥ the real gap between the bursts at the node
        assert gap_bound_s < quiet_s, f"machine too slow: bursts {gap_bound_s:.2f} s apart, not < {quiet_s} s"
        _wait(lambda: len(node.queue.jobs("done")) == 1, 30, "the job")
        time.sleep(quiet_s + 0.5)  # long enough for a (wrong) second batch to be closed and run
    finally:
        node.stop()
    done = node.queue.jobs("done")
    assert len(done) == 1 and done[0].study_uid == study
    assert seen == [_sops(files)]  # exactly one analysis, of all 7 instances
    assert not (tmp_path / "node" / "incoming" / study).exists()


def test_quiet_period_gap_longer_than_it_makes_a_second_job(tmp_path: Path, pacs_peers) -> None:
    """A pause longer than ``quiet_period_s`` closes the first batch: it is queued with the
    instances received so far. Instances arriving later — here while the first job is still
    running — form a second batch and a second job of their own; the first job neither sees nor
    deletes them, and nothing is lost. (The worker closes batches between jobs, so the second
    batch is queued once the first job has finished.)"""
    import threading

    gate = threading.Event()
    node, seen = _recording_node(tmp_path, 0.5, gate)
    files, study, _ = write_phantom_series(tmp_path / "ph", n_slices=7, distinct_slices=1)
    node.start()
    try:
        assert _send_to_node(node.scp.port, files[:4]).returncode == 0
        _wait(lambda: len(seen) == 1, 30, "the first job to start")  # quiet period over, job 1 running
        assert _send_to_node(node.scp.port, files[4:]).returncode == 0
        # the late instances wait in incoming/, apart from the running job's batch
        assert {p.stem for p in (tmp_path / "node" / "incoming" / study).rglob("*.dcm")} == _sops(files[4:])
        assert len(node.queue.jobs("running")) == 1
        gate.set()
        assert node.wait_idle(30)
    finally:
        gate.set()
        node.stop()
    done = node.queue.jobs("done")
    assert [j.study_uid for j in done] == [study, study] and node.queue.jobs("failed") == []
    assert seen == [_sops(files[:4]), _sops(files[4:])]
    assert not (tmp_path / "node" / "incoming" / study).exists()
    assert not list((tmp_path / "node" / "staged").iterdir())  # images removed once each job is done
