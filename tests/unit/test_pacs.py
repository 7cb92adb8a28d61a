"""Unit tests of the PACS side that need no PACS: configuration, UID checks, audit log, job
queue and back-off, series choice, and our storage SCP over plain and TLS associations
(pynetdicom both ends, loopback only)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sarcoscope.errors import ConfigError, PacsError
from sarcoscope.pacs.config import LocalNode, PacsNode, TlsSettings, load_config, node_with_overrides
from sarcoscope.pacs.dimse import SeriesRecord
from tests.conftest import require


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- configuration ------------------------------------------------------------------------------
def test_config_round_trip_and_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "sarcoscope.toml"
    cfg.write_text(
        '[local]\nae_title = "SARCO"\nport = 11113\nallowed_calling_aets = ["PACS1"]\nwork_dir = "w"\n'
        'send_back_to = "pacs"\n'
        '[nodes.pacs]\nae_title = "ORTHANC"\nhost = "pacs.example.org"\nport = 104\n'
        'dicomweb_url = "https://pacs.example.org/dicom-web"\n'
    )
    c = load_config(cfg)
    assert c.local.ae_title == "SARCO" and c.local.allowed_calling_aets == ("PACS1",)
    assert c.local.work_dir == tmp_path / "w"  # relative to the config file
    node = c.node("pacs")
    assert (node.ae_title, node.host, node.port) == ("ORTHANC", "pacs.example.org", 104)
    over = node_with_overrides(c, "pacs", port=11112, ae_title="OTHER")
    assert (over.port, over.ae_title, over.host) == (11112, "OTHER", "pacs.example.org")
    adhoc = node_with_overrides(c, "adhoc", host="10.0.0.1", port=4242, ae_title="X")
    assert adhoc.describe() == "adhoc = X@10.0.0.1:4242"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[nodes.p]\nae_title = "A"\nhost = "h"\nport = 70000\n', r"port 70000 must be an integer 1-65535"),
        ('[nodes.p]\nae_title = "THIS_AE_TITLE_IS_TOO_LONG"\nhost = "h"\nport = 1\n', r"AE title .* is invalid"),
        ('[nodes.p]\nae_title = "A"\nhost = "h"\nport = 1\ncolour = "red"\n', r"unknown keys \['colour'\]"),
        ('[local]\nsend_back_to = "nowhere"\n', r"send_back_to = 'nowhere' names no configured node"),
        ('[nodes.p\n', r"is not valid TOML"),
        ('[nodes.p]\nae_title = "A"\nhost = "h"\nport = 1\ndicomweb_url = "ftp://x"\n', r"must start with http"),
    ],
)
def test_config_errors_name_the_value(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "sarcoscope.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)


def test_unknown_node_lists_known(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[nodes.a]\nae_title = "A"\nhost = "h"\nport = 1\n')
    with pytest.raises(ConfigError, match=r"PACS node 'b' is not configured in .*c\.toml \(known: a\)"):
        load_config(cfg).node("b")
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_config(tmp_path / "missing.toml")


def test_tls_paths_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ca_file .*nope\.pem does not exist"):
        TlsSettings(ca_file=tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=r"must be given together"):
        TlsSettings(cert_file=tmp_path / "c.pem")


# -- UIDs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "../../etc/passwd", "1.2.03", "1..2", "1.2.", "a.b", "1" * 65, "1.2/3", None])
def test_bad_uids_never_become_paths(tmp_path: Path, bad) -> None:
    from sarcoscope.pacs.uids import check_uid, uid_path

    with pytest.raises(PacsError, match=r"is not a valid DICOM UID"):
        check_uid(bad, "received StudyInstanceUID")
    with pytest.raises(PacsError):
        uid_path(tmp_path, "1.2.3", bad)


def test_good_uid_path(tmp_path: Path) -> None:
    from sarcoscope.pacs.uids import uid_path

    assert uid_path(tmp_path, "1.2.3", "0.4") == tmp_path / "1.2.3" / "0.4"


# -- audit --------------------------------------------------------------------------------------
def test_audit_appends_and_refuses_identifiers(tmp_path: Path) -> None:
    from sarcoscope.pacs.audit import AuditLog, read_audit

    log = AuditLog(tmp_path / "a" / "audit.jsonl")
    log.record("request", node="pacs", study_uid="1.2.3")
    log.record("sent", node="pacs", sop_instance_uids=["1.2.3.4"])
    first = (tmp_path / "a" / "audit.jsonl").read_text().splitlines()[0]
    log2 = AuditLog(tmp_path / "a" / "audit.jsonl")  # a new process appends, never rewrites
    log2.record("echo", node="pacs")
    lines = (tmp_path / "a" / "audit.jsonl").read_text().splitlines()
    assert lines[0] == first and len(lines) == 3
    recs = read_audit(tmp_path / "a" / "audit.jsonl")
    assert [r["event"] for r in recs] == ["request", "sent", "echo"]
    assert all({"ts", "user", "host", "pid"} <= set(r) for r in recs)
    with pytest.raises(ValueError, match=r"forbidden identifying keys \['patient_id'\]"):
        log.record("find", patient_id="12345")


# -- queue and back-off -------------------------------------------------------------------------
def test_queue_survives_crash_and_dedupes(tmp_path: Path) -> None:
    from sarcoscope.pacs.queue import JobQueue

    q = JobQueue(tmp_path / "q")
    a = q.add("1.2.3", tmp_path / "in" / "1.2.3")
    assert q.add("1.2.3", tmp_path / "in" / "1.2.3").id == a.id  # not queued twice
    job = q.claim()
    assert job.id == a.id and job.attempts == 1 and q.jobs("pending") == []
    # "crash": a new queue object on the same folder finds the job in running/ and resumes it
    q2 = JobQueue(tmp_path / "q")
    assert [j.id for j in q2.recover()] == [a.id]
    again = q2.claim()
    assert again.attempts == 2 and "recovered after restart" in again.history
    later = q2.retry_later(again, "PACS down", delay_s=60)
    assert q2.claim() is None  # not due yet
    assert q2.claim(now=time.time() + 61).id == later.id
    q2.complete(later)
    assert [j.id for j in q2.jobs("done")] == [a.id]
    assert json.loads(next((tmp_path / "q" / "done").glob("*.json")).read_text())["study_uid"] == "1.2.3"


def test_backoff_doubles_and_caps() -> None:
    from sarcoscope.pacs.node import backoff_s

    assert [backoff_s(n, 5, 60) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]


# -- series choice ------------------------------------------------------------------------------
def _s(uid: str, mod: str, desc: str, n: int) -> SeriesRecord:
    return SeriesRecord("1.2", uid, mod, desc, None, n)


def test_choose_series_prefers_axial_ct_with_most_images() -> None:
    from sarcoscope.pacs.workflow import choose_series

    series = [_s("1", "CT", "Topogram 0.6 T20f", 1), _s("2", "CT", "ABD 5mm", 60), _s("3", "CT", "ABD 1mm", 300),
              _s("4", "CT", "COR MPR 3mm", 400), _s("5", "SR", "Dose Report", 1), _s("6", "SEG", "x", 1)]
    assert choose_series(series, "1.2").series_uid == "3"


def test_choose_series_explains_when_nothing_fits() -> None:
    from sarcoscope.pacs.workflow import choose_series

    with pytest.raises(PacsError, match=r"study 1\.2 has no CT series .*MR #None 'T1' \(20 images\)"):
        choose_series([_s("1", "MR", "T1", 20)], "1.2")
    with pytest.raises(PacsError, match=r"no axial CT series \(only scouts, reformats or dose pages\)"):
        choose_series([_s("1", "CT", "Scout", 2)], "1.2")


def test_choose_series_probes_image_type_and_orientation() -> None:
    from sarcoscope.pacs.dimse import InstanceBrief
    from sarcoscope.pacs.workflow import choose_series

    axial = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    briefs = {
        "big-scout": [InstanceBrief("1", ("ORIGINAL", "PRIMARY", "LOCALIZER"), axial)] * 3,
        "coronal": [InstanceBrief("1", ("DERIVED", "SECONDARY"), coronal)] * 3,
        "axial": [InstanceBrief("1", ("ORIGINAL", "PRIMARY", "AXIAL"), axial)] * 3,
    }
    series = [_s("big-scout", "CT", "Abdomen", 500), _s("coronal", "CT", "Abdomen", 400), _s("axial", "CT", "Abdomen", 300)]
    probe = lambda s: briefs[s.series_uid]  # noqa: E731
    assert choose_series(series, "1.2", probe=probe).series_uid == "axial"
    with pytest.raises(PacsError, match=r"rejected CT .*500 images\): 3 of 3 images are LOCALIZER .*not axial"):
        choose_series(series[:2], "1.2", probe=probe)
    # a PACS that does not answer these attributes: fall back to the series-level choice
    assert choose_series(series, "1.2", probe=lambda s: []).series_uid == "big-scout"


# -- our storage SCP: plain and TLS -------------------------------------------------------------
def test_scp_echo_and_store_roundtrip(tmp_path: Path) -> None:
    from tests.unit.test_dicom_export import write_ct_series

    from sarcoscope.pacs import dimse
    from sarcoscope.pacs.scp import StorageSCP

    local = LocalNode(ae_title="SARCO", port=_free_port(), work_dir=tmp_path, allowed_calling_aets=("SENDER",))
    paths, _, _ = write_ct_series(tmp_path / "ct", n=2)
    got = []
    with StorageSCP(local, tmp_path / "in", on_stored=got.append) as scp:
        node = PacsNode("me", "SARCO", "127.0.0.1", scp.port, timeout_s=5)
        assert dimse.echo(node, "SENDER") > 0
        assert len(dimse.store_files(node, "SENDER", paths)) == 2
        with pytest.raises(PacsError, match=r"calling AE title is not recognised.*register calling AE 'OTHER'"):
            dimse.echo(node, "OTHER")
    assert len(got) == 2 and all(g.path.is_file() and g.calling_aet == "SENDER" for g in got)
    assert got[0].path.parent.parent.parent == tmp_path / "in"  # in/<study>/<series>/<sop>.dcm


def _make_certs(d: Path) -> tuple[Path, Path, Path]:
    require(shutil.which("openssl") is not None, "openssl (to make test certificates)")
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=sarcoscope test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=localhost")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


def test_tls_echo(tmp_path: Path) -> None:
    from sarcoscope.pacs import dimse
    from sarcoscope.pacs.scp import StorageSCP

    ca, cert, key = _make_certs(tmp_path)
    local = LocalNode(ae_title="SARCO", port=_free_port(), work_dir=tmp_path,
                      tls=TlsSettings(cert_file=cert, key_file=key))
    with StorageSCP(local, tmp_path / "in") as scp:
        tls_node = PacsNode("tls", "SARCO", "127.0.0.1", scp.port, tls=TlsSettings(ca_file=ca), timeout_s=5)
        assert dimse.echo(tls_node, "ANY") > 0
        from sarcoscope.cli.main import main  # the same from the command line, no node configured

        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[local]\nwork_dir = "{tmp_path / "w"}"\n')
        base = ["pacs", "echo", "adhoc", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(scp.port),
                "--aet", "SARCO"]
        assert main(base + ["--tls-ca", str(ca)]) == 0
        assert main(base) == 6  # plain DICOM to a TLS-only SCP: PACS error exit code
        plain = PacsNode("plain", "SARCO", "127.0.0.1", scp.port, timeout_s=3)
        with pytest.raises(PacsError, match=r"PACS plain .*closed the association.*TLS is on at one side only"):
            dimse.echo(plain, "ANY")
        other_ca, _, _ = _make_certs(tmp_path / "other" if (tmp_path / "other").mkdir() is None else tmp_path)
        untrusted = PacsNode("untrusted", "SARCO", "127.0.0.1", scp.port, tls=TlsSettings(ca_file=other_ca), timeout_s=3)
        with pytest.raises(PacsError, match=r"PACS untrusted .*closed the association.*certificate is not trusted"):
            dimse.echo(untrusted, "ANY")


def test_node_job_outcomes_without_network(tmp_path: Path) -> None:
    from sarcoscope.errors import L3NotFound
    from sarcoscope.pacs.audit import AuditLog, read_audit
    from sarcoscope.pacs.node import Node

    local = LocalNode(work_dir=tmp_path, retry_base_s=30, max_attempts=2)
    calls = {"process": 0, "send": 0}

    def process(folder: Path, out: Path) -> list[Path]:
        calls["process"] += 1
        if "9" in folder.name:
            raise L3NotFound("L3 not found: the scan covers z 0…40 mm")
        out.mkdir(parents=True, exist_ok=True)
        (out / "seg.dcm").write_bytes(b"x")
        return [out / "seg.dcm"]

    def send(files) -> None:
        calls["send"] += 1
        raise PacsError("cannot connect to PACS test = X@127.0.0.1:1")

    node = Node(local, process, send, AuditLog(tmp_path / "audit.jsonl"))
    node.queue.add("1.2.9", tmp_path / "incoming" / "1.2.9")
    node.run_job(node.queue.claim())
    failed = node.queue.jobs("failed")
    assert len(failed) == 1 and "L3 not found" in failed[0].last_error  # no retry for bad studies
    node.queue.add("1.2.3", tmp_path / "incoming" / "1.2.3")
    node.run_job(node.queue.claim())
    pending = node.queue.jobs("pending")
    assert len(pending) == 1 and "cannot connect" in pending[0].last_error and pending[0].result_files
    node.run_job(node.queue.claim(now=time.time() + 31))  # second attempt: results re-sent, not recomputed
    assert calls == {"process": 2, "send": 2}
    assert [j.study_uid for j in node.queue.jobs("failed")] == ["1.2.9", "1.2.3"]  # max_attempts reached
    assert [e["event"] for e in read_audit(tmp_path / "audit.jsonl")] == ["failed", "analysed", "retry", "failed"]


def test_scp_refuses_instance_with_path_like_uid(tmp_path: Path) -> None:
    import warnings

    from pydicom import dcmread

    from sarcoscope.pacs import dimse
    from sarcoscope.pacs.scp import StorageSCP
    from tests.unit.test_dicom_export import write_ct_series

    paths, _, _ = write_ct_series(tmp_path / "ct", n=1)
    ds = dcmread(paths[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UI value: that is the point
        ds.StudyInstanceUID = "../../escape"
        ds.save_as(tmp_path / "evil.dcm")
    local = LocalNode(ae_title="SARCO", port=_free_port(), work_dir=tmp_path)
    with StorageSCP(local, tmp_path / "in") as scp:
        node = PacsNode("me", "SARCO", "127.0.0.1", scp.port, timeout_s=5)
        with pytest.raises(PacsError, match=r"stopped at the CT Image Storage \(evil\.dcm\): DIMSE status 0xC000 \(error: cannot understand\)") as info:
            dimse.store_files(node, "SENDER", [tmp_path / "evil.dcm"])
    assert info.value.status == 0xC000
    assert scp.n_received == 0
    assert not (tmp_path / "escape").exists() and not list(tmp_path.rglob("*escape*"))


def test_cli_option_errors_before_any_network(tmp_path: Path, capsys) -> None:
    from sarcoscope.cli.main import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[local]\nwork_dir = "{tmp_path / "w"}"\n[nodes.p]\nae_title = "P"\nhost = "127.0.0.1"\nport = 1\n')
    assert main(["pacs", "find", "p", "--config", str(cfg), "--date-range", "2024-01-01"]) == 2
    assert "--date-range '2024-01-01': use YYYYMMDD-YYYYMMDD" in capsys.readouterr().err
    assert main(["pacs", "analyze", "p", "--config", str(cfg), "--study", "1.2.3", "--accession", "A1"]) == 2
    assert "exactly one of --study UID or --accession" in capsys.readouterr().err
    for bad in ("1.2.03", "../../etc"):  # bad input, not a PACS failure: exit 2, before any network
        assert main(["pacs", "analyze", "p", "--config", str(cfg), "--study", bad]) == 2
        assert f"--study {bad!r} is not a DICOM UID" in capsys.readouterr().err
    assert main(["node", "--config", str(cfg)]) == 2
    assert "needs a node to send results to" in capsys.readouterr().err


def test_association_dropped_by_a_listening_pacs_says_register_the_ae_title() -> None:
    """A PACS that accepts the TCP connection and then closes it unanswered (as many do to an
    unknown calling AE title) is not reported as down; a closed port still is."""
    import threading

    from sarcoscope.pacs import dimse

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]

    def drop_everything() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=drop_everything, daemon=True).start()
    try:
        node = PacsNode(name="dropper", ae_title="PACS", host="127.0.0.1", port=port, timeout_s=5)
        with pytest.raises(PacsError, match=r"closed the association from 'NEWCOMER' without answering.*"
                                            r"register calling AE 'NEWCOMER'"):
            dimse.echo(node, "NEWCOMER")
    finally:
        server.close()
    closed = PacsNode(name="down", ae_title="PACS", host="127.0.0.1", port=_free_port(), timeout_s=5)
    with pytest.raises(PacsError, match=r"cannot connect to PACS down"):
        dimse.echo(closed, "NEWCOMER")
