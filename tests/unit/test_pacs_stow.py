"""STOW-RS send-back says, like C-STORE, which result objects the PACS holds.

The PACS is a small HTTP server on 127.0.0.1 (a free port) that reads the multipart request and
answers as a STOW-RS origin server may (PS3.18 10.5.3): 200 with a ReferencedSOPSequence, 202
with a partial FailedSOPSequence (DICOM JSON or XML), 409 with every instance refused, 500
without a body, or no answer at all. Each case checks the ``dimse.SendError`` fields the CLI's
audit record and the node's retry rely on (``stored`` / ``unconfirmed`` / ``not_sent`` /
``refused_sop_classes``) and the message.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydicom import dcmread

from sarcoscope.errors import ExportError, PacsError
from sarcoscope.pacs import dimse, node, web, workflow
from sarcoscope.pacs.config import LocalNode, PacsNode
from tests.unit.test_dicom_export import make_result, write_ct_series
from tests.unit.test_pacs_sendback import _outputs

SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
JSON = "application/dicom+json"


class _FakeStow(BaseHTTPRequestHandler):
    """STOW-RS origin server: reads the request, then sends ``answer`` (status, media type, body),
    or closes the connection without a word when ``answer`` is None."""

    answer: tuple[int, str, bytes] | None = (200, JSON, b"{}")
    posts: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        type(self).posts.append(self._body())
        if self.answer is None:
            self.close_connection = True
            return
        code, media, body = self.answer
        self.send_response(code)
        if media:
            self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            out += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return out

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def stow():
    """(handler class, node) for a fake STOW-RS server on a free loopback port."""
    _FakeStow.posts = []
    _FakeStow.answer = (200, JSON, b"{}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeStow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    try:
        yield _FakeStow, PacsNode("web", "W", "127.0.0.1", 104, dicomweb_url=url, timeout_s=5)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[list[Path], list[tuple[str, str]]]:
    """SEG, SR and key image files and their (SOPInstanceUID, SOPClassUID), in sending order."""
    d = tmp_path_factory.mktemp("results")
    paths, hu, affine = write_ct_series(d / "ct")
    files = _outputs(make_result(paths, hu, affine), d / "out")
    return files, [(str(ds.SOPInstanceUID), str(ds.SOPClassUID)) for ds in map(dcmread, files)]


def _item(uid: str, cls: str, reason: int | None = None) -> dict:
    item = {"00081150": {"vr": "UI", "Value": [cls]}, "00081155": {"vr": "UI", "Value": [uid]}}
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    return item


def _json(stored=(), failed=()) -> bytes:
    """A Store Instances Response in DICOM JSON: ``stored`` (uid, class), ``failed`` (uid, class, reason)."""
    doc = {}
    if failed:
        doc["00081198"] = {"vr": "SQ", "Value": [_item(*f) for f in failed]}
    if stored:
        doc["00081199"] = {"vr": "SQ", "Value": [_item(*s) for s in stored]}
    return json.dumps(doc).encode()


def _xml(stored=(), failed=()) -> bytes:
    """The same in the Native DICOM Model (application/dicom+xml)."""
    def attr(tag: str, keyword: str, vr: str, value) -> str:
        return (f'<DicomAttribute tag="{tag}" vr="{vr}" keyword="{keyword}"><Value number="1">{value}</Value>'
                "</DicomAttribute>")

    def seq(tag: str, keyword: str, rows) -> str:
        items = "".join(
            f'<Item number="{n}">{attr("00081150", "ReferencedSOPClassUID", "UI", r[1])}'
            f'{attr("00081155", "ReferencedSOPInstanceUID", "UI", r[0])}'
            + (attr("00081197", "FailureReason", "US", r[2]) if len(r) > 2 else "") + "</Item>"
            for n, r in enumerate(rows, 1))
        return f'<DicomAttribute tag="{tag}" vr="SQ" keyword="{keyword}">{items}</DicomAttribute>' if rows else ""

    return ('<?xml version="1.0" encoding="UTF-8"?><NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/'
            f'NativeDICOM">{seq("00081198", "FailedSOPSequence", failed)}'
            f'{seq("00081199", "ReferencedSOPSequence", stored)}</NativeDicomModel>').encode()


# -- 200: only what the server confirmed ------------------------------------------------------
def test_200_returns_the_uids_the_answer_confirms(stow, results) -> None:
    handler, pacs = stow
    files, objs = results
    (seg, seg_cls), (sr, sr_cls), (sc, sc_cls) = objs
    # media type parameters must not hide the body (dicomweb-client compares the whole header)
    handler.answer = (200, JSON + "; charset=utf-8", _json(stored=objs))
    assert workflow.send_files(pacs, LocalNode(), files, "stow") == [seg, sr, sc]
    assert len(handler.posts) == 1 and all(u.encode() in handler.posts[0] for u, _ in objs)

    handler.answer = (200, JSON, _json(stored=objs[:2]))  # the key image is not in the answer
    with pytest.raises(dimse.SendError) as info:
        web.stow_files(pacs, files)
    exc = info.value
    assert exc.stored_uids == [seg, sr] and [o.kind for o in exc.unconfirmed] == ["key image"]
    assert exc.not_sent == () and exc.refused_sop_classes == () and exc.http_status == 200
    assert not node.refuses_sop_class(exc) and node.stored_before_failure(exc) == ([seg, sr], [sc])
    msg = str(exc)
    assert "HTTP 200: the answer does not confirm every instance" in msg
    assert f"Stored in the PACS: SEG (seg.dcm, SOPInstanceUID {seg}), SR (sr.dcm, SOPInstanceUID {sr})" in msg
    assert f"may or may not hold key image (keyimage.dcm, SOPInstanceUID {sc})" in msg


def test_200_without_a_body_confirms_nothing(stow, results, caplog) -> None:
    handler, pacs = stow
    files, _ = results
    handler.answer = (200, "", b"")
    with caplog.at_level(logging.WARNING, logger="sarcoscope.pacs.web"):
        assert web.stow_files(pacs, files) == []
    assert "HTTP 200 without a Store Instances Response" in caplog.text and "none is reported" in caplog.text


# -- 202: part stored, part failed ------------------------------------------------------------
def test_202_partial_failure_says_what_is_stored_and_never_retries_a_refused_class(stow, results) -> None:
    handler, pacs = stow
    files, objs = results
    (seg, seg_cls), (sr, sr_cls), (sc, sc_cls) = objs
    # 0x0110 (processing failure) is the smaller code: it must not mask 0x0122 (class not supported)
    handler.answer = (202, JSON, _json(stored=[objs[0]], failed=[(sr, sr_cls, 0x0110), (sc, sc_cls, 0x0122)]))
    with pytest.raises(dimse.SendError) as info:
        web.stow_files(pacs, files)
    exc = info.value
    assert isinstance(exc, PacsError) and exc.exit_code == 6
    assert exc.status == 0x0122 and exc.http_status == 202 and exc.partial
    assert exc.stored_uids == [seg] and exc.unconfirmed == ()
    assert [o.kind for o in exc.not_sent] == ["SR", "key image"]
    assert [o.file_name for o in exc.not_sent] == ["sr.dcm", "keyimage.dcm"]
    assert exc.refused_sop_classes == (SC_CLASS,)
    assert node.refuses_sop_class(exc)  # permanent: the node does not retry it
    assert node.stored_before_failure(exc) == ([seg], [])
    msg = str(exc)
    assert ("HTTP 202: the PACS did not store SR (sr.dcm): failure reason 0x0110 (processing failure); "
            "key image (keyimage.dcm): failure reason 0x0122 (SOP class not supported)") in msg
    assert f"Stored in the PACS: SEG (seg.dcm, SOPInstanceUID {seg}); not stored: SR, key image" in msg
    assert f"does not accept Secondary Capture Image Storage ({SC_CLASS}) by STOW-RS" in msg
    assert "--send-via store" in msg and "incomplete result set" in msg


def test_202_xml_processing_failure_is_worth_a_retry(stow, results) -> None:
    handler, pacs = stow
    files, objs = results
    (seg, _), (sr, sr_cls), (sc, _) = objs
    handler.answer = (202, "application/dicom+xml", _xml(stored=[objs[0], objs[2]], failed=[(sr, sr_cls, 0x0110)]))
    with pytest.raises(dimse.SendError) as info:
        web.stow_files(pacs, files)
    exc = info.value
    assert exc.status == 0x0110 and exc.refused_sop_classes == () and not node.refuses_sop_class(exc)
    assert exc.stored_uids == [seg, sc] and [o.kind for o in exc.not_sent] == ["SR"] and exc.unconfirmed == ()
    assert "send again: the same UIDs are used" in str(exc)


# -- 409: all refused -------------------------------------------------------------------------
def test_409_all_refused_keeps_the_failure_reasons(stow, results) -> None:
    handler, pacs = stow
    files, objs = results
    handler.answer = (409, JSON, _json(failed=[(u, c, 0x0122) for u, c in objs]))
    with pytest.raises(dimse.SendError) as info:
        web.stow_files(pacs, files)
    exc = info.value
    assert exc.http_status == 409 and exc.status == 0x0122
    assert exc.stored == () and exc.unconfirmed == () and not exc.partial
    assert [o.kind for o in exc.not_sent] == ["SEG", "SR", "key image"]
    assert set(exc.refused_sop_classes) == {c for _, c in objs}
    assert node.refuses_sop_class(exc) and node.stored_before_failure(exc) == ([], [])
    assert len(handler.posts) == 1  # asked once, not retried
    msg = str(exc)
    assert "HTTP 409: the PACS did not store SEG (seg.dcm): failure reason 0x0122 (SOP class not supported)" in msg
    assert "The PACS confirmed none of them; not stored: SEG, SR, key image" in msg
    assert "sending again cannot help" in msg


# -- no usable answer -------------------------------------------------------------------------
def test_500_without_a_body_leaves_every_object_unconfirmed(stow, results) -> None:
    handler, pacs = stow
    files, objs = results
    handler.answer = (500, "", b"")
    with pytest.raises(dimse.SendError) as info:
        web.stow_files(pacs, files)
    exc = info.value
    assert exc.http_status == 500 and exc.status is None and exc.refused_sop_classes == ()
    assert [o.kind for o in exc.unconfirmed] == ["SEG", "SR", "key image"] and exc.stored == () and exc.not_sent == ()
    assert not node.refuses_sop_class(exc)  # a server error: retried
    assert node.stored_before_failure(exc) == ([], [u for u, _ in objs])
    msg = str(exc)
    assert "HTTP 500: check the server log. The PACS confirmed none of them; the PACS may or may not hold SEG" in msg


def test_no_answer_leaves_every_object_unconfirmed_and_no_connection_is_a_plain_error(stow, results) -> None:
    handler, pacs = stow
    files, objs = results
    handler.answer = None  # reads the request, closes without a word
    with pytest.raises(dimse.SendError) as info:
        web.stow_files(pacs, files)
    exc = info.value
    assert len(handler.posts) == 1 and [o.kind for o in exc.unconfirmed] == ["SEG", "SR", "key image"]
    assert exc.stored == () and exc.not_sent == () and exc.http_status is None
    assert "no answer to the upload" in str(exc) and "cannot reach" not in str(exc)

    with socket.socket() as s:  # a free port nobody listens on: nothing can have been sent
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = PacsNode("web", "W", "127.0.0.1", 104, dicomweb_url=f"http://127.0.0.1:{port}/dw", timeout_s=5)
    with pytest.raises(PacsError, match=r"STOW-RS upload: cannot reach http://127\.0\.0\.1:\d+/dw") as info:
        web.stow_files(closed, files)
    assert not isinstance(info.value, dimse.SendError)


def test_an_unreadable_result_file_is_an_export_error(stow, results, tmp_path: Path) -> None:
    handler, pacs = stow
    files, _ = results
    bad = tmp_path / "sr.dcm"
    bad.write_bytes(b"not DICOM")
    with pytest.raises(ExportError, match=rf"cannot read result file {bad} to send it"):
        web.stow_files(pacs, [files[0], bad])
    assert handler.posts == []  # nothing sent
