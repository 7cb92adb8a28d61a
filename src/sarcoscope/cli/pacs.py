"""``sarcoscope pacs echo|find|analyze`` and ``sarcoscope node``: the hospital side.

Composition lives here (the pacs package moves bytes; the pipeline analyses; the exporters write
DICOM): ``run_pacs_analysis`` = query → choose the CT series → retrieve only it → analyse exactly
like ``sarcoscope analyze`` → write SEG + SR + key image into the original study → optionally
send them back. ``analyse_folder`` is also what the node runs for each received study.
"""

from __future__ import annotations

import enum
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from sarcoscope.pacs.audit import AuditLog
    from sarcoscope.pacs.config import LocalNode, PacsNode
    from sarcoscope.settings import AnalysisSettings
    from sarcoscope.types import AnalysisResult

log = logging.getLogger(__name__)


class Via(str, enum.Enum):
    get = "get"
    move = "move"
    wado = "wado"


class SendVia(str, enum.Enum):
    store = "store"
    stow = "stow"


# ------------------------------------------------------------------------------ composition
@dataclass
class PacsRun:
    """What one ``pacs analyze`` did, with the time of each step (seconds)."""

    study_uid: str
    series_uid: str
    result: "AnalysisResult"
    files: list[Path]
    stored_uids: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    n_retrieved: int = 0


def write_dicom_results(result: "AnalysisResult", out_dir: Path) -> list[Path]:
    """overlay.png + result.json (as ``analyze``) and the DICOM SEG, SR and key image."""
    from sarcoscope.cli.analyze import write_outputs
    from sarcoscope.export.dicom_seg import build_seg, save_dataset, source_headers
    from sarcoscope.export.dicom_sr import build_sr
    from sarcoscope.export.secondary_capture import build_secondary_capture

    out_dir = Path(out_dir)
    write_outputs(result, out_dir=out_dir)
    headers = source_headers(result)
    seg = build_seg(result, headers)
    sr = build_sr(result, seg, headers)
    from sarcoscope.render.overlay import primary_index

    sc = build_secondary_capture(result, out_dir / "overlay.png", headers, shown_index=primary_index(result))
    return [
        save_dataset(seg, out_dir / "seg.dcm"),
        save_dataset(sr, out_dir / "sr.dcm"),
        save_dataset(sc, out_dir / "keyimage.dcm"),
    ]


def analyse_folder(folder: Path, settings: "AnalysisSettings", out_dir: Path) -> tuple["AnalysisResult", list[Path]]:
    """Analyse the series in ``folder`` exactly like ``sarcoscope analyze`` and write the DICOM results."""
    from sarcoscope.pipeline import analyze

    result = analyze(Path(folder), settings)
    return result, write_dicom_results(result, out_dir)


def run_pacs_analysis(
    node: "PacsNode",
    local: "LocalNode",
    settings: "AnalysisSettings",
    *,
    study_uid: str | None = None,
    accession: str | None = None,
    via: str = "get",
    send_back: bool = False,
    send_via: str = "store",
    out_dir: Path | None = None,
    keep_images: bool = False,
    audit: "AuditLog | None" = None,
) -> PacsRun:
    from sarcoscope.pacs.audit import AuditLog

    audit = audit or AuditLog.for_local(local)
    with audit.request(node=node.name, calling_aet=local.ae_title, study_uid=study_uid or "",
                       accession_hmac=audit.digest(accession) if accession else "", via=via,
                       send_back=send_back) as req:
        return _run_audited(node, local, settings, req, audit, study_uid=study_uid, accession=accession, via=via,
                            send_back=send_back, send_via=send_via, out_dir=out_dir, keep_images=keep_images)


def _run_audited(node, local, settings, req, audit, *, study_uid, accession, via, send_back, send_via, out_dir,
                 keep_images) -> PacsRun:
    """The body of ``run_pacs_analysis``: every way out ends the audited request with one outcome."""
    from sarcoscope.pacs import dimse, web, workflow
    from sarcoscope.pacs.config import redact_url
    from sarcoscope.pacs.uids import uid_path

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if study_uid is None and accession and via == "wado":
        found = web.qido_studies(node, dimse.StudyQuery(accession=accession))
        uids = sorted({r.study_uid for r in found})
        if len(uids) != 1:
            from sarcoscope.errors import PacsError

            raise PacsError(f"{len(uids)} studies on {redact_url(node.dicomweb_url)} match the accession number "
                            "given; need exactly one (use --study UID)")
        study = uids[0]
    else:
        study = dimse.resolve_study(node, local.ae_title, study_uid=study_uid, accession=accession)
    req.context["study_uid"] = study
    listed = workflow.list_series(node, local, study, via)
    if not listed:
        from sarcoscope.errors import PacsError

        where = redact_url(node.dicomweb_url) if via == "wado" else node.describe()
        raise PacsError(f"study {study} not found on {where} (it has no series there); check the "
                        "StudyInstanceUID with `sarcoscope pacs find`")
    series = workflow.choose_series(listed, study, probe=workflow.series_probe(node, local, via))
    timings["query"] = time.perf_counter() - t0
    log.info("study %s: analysing %s", study, series.describe())

    images_root = Path(local.work_dir) / "images"
    t0 = time.perf_counter()
    stats = workflow.retrieve_series(node, local, series, images_root, via)
    timings["retrieve"] = time.perf_counter() - t0
    audit.record("retrieved", node=node.name, study_uid=study, series_uid=series.series_uid,
                 n_files=stats.n_files, bytes=stats.n_bytes, via=via)
    try:
        t0 = time.perf_counter()
        out = Path(out_dir) if out_dir is not None else uid_path(Path(local.work_dir) / "results", study)
        result, files = analyse_folder(stats.folder, settings, out)
        timings["analyse"] = time.perf_counter() - t0
        run = PacsRun(study, series.series_uid, result, files, timings_s=timings, n_retrieved=stats.n_files)
        if not send_back:
            req.outcome("analysed", series_uid=series.series_uid, slices=list(result.choice.indices),
                        outputs=[f.name for f in files])
            return run
        audit.record("analysed", study_uid=study, series_uid=series.series_uid,
                     slices=list(result.choice.indices), outputs=[f.name for f in files])
        t0 = time.perf_counter()
        try:
            run.stored_uids = workflow.send_files(node, local, files, send_via)
        except workflow.SendError as exc:
            req.outcome("send-failed", via=send_via, reason=str(exc)[:500],
                        sop_instance_uids=list(exc.stored_uids),
                        unconfirmed_sop_instance_uids=exc.unconfirmed_uids,
                        not_sent=[o.kind for o in exc.not_sent])
            raise
        timings["send"] = time.perf_counter() - t0
        req.outcome("sent", via=send_via, sop_instance_uids=run.stored_uids)
        return run
    finally:
        if not keep_images:
            shutil.rmtree(stats.folder, ignore_errors=True)


# ------------------------------------------------------------------------------ options
def tls_with_overrides(base, ca=None, cert=None, key=None, check_hostname=None):
    """``base`` TLS settings (from the configuration, may be None) with the command-line values
    replacing the configured ones field by field; None when neither gives any TLS value."""
    from sarcoscope.pacs.config import TlsSettings

    if base is None and ca is None and cert is None and key is None:
        return None  # --[no-]tls-check-hostname alone does not switch TLS on
    base = base or TlsSettings()
    # cert and key are a pair: either both from the command line or both from the configuration
    if cert is None and key is None:
        cert, key = base.cert_file, base.key_file
    return TlsSettings(
        ca_file=ca if ca is not None else base.ca_file,
        cert_file=cert,
        key_file=key,
        check_hostname=base.check_hostname if check_hostname is None else check_hostname,
    )


def check_writable_dir(path: Path, what: str, setting: str) -> None:
    """Create ``path`` if needed; ConfigError naming it and the setting when that is impossible."""
    import os

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from sarcoscope.errors import ConfigError

        raise ConfigError(f"{what} {path} cannot be created ({exc.strerror or type(exc).__name__}); "
                          f"set {setting} to a folder you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        from sarcoscope.errors import ConfigError

        raise ConfigError(f"{what} {path} is not writable for this user; set {setting} to a folder you can "
                          "write to")


def _check_audit_dir(local: "LocalNode") -> None:
    """work_dir (images, results, the audit key) and, when set apart, the audit log's folder."""
    check_writable_dir(local.work_dir, "work_dir", "[local] work_dir or --work-dir")
    if local.audit_log is not None:
        check_writable_dir(local.audit_log.parent, "audit log folder", "[local] audit_log or --audit-log")


def check_tls_files(node: "PacsNode | None" = None, local: "LocalNode | None" = None, server: bool = False,
                    options: str = "--tls-*") -> None:
    """Load the TLS files now (ConfigError naming the file and what is wrong) instead of failing
    half-way through a retrieval or when the first study arrives."""
    from sarcoscope.pacs.tls import client_context, server_context

    if node is not None and node.tls is not None:
        client_context(node.tls, f"node {node.name!r} TLS ([nodes.{node.name}.tls] or the {options} options)")
    if server and local is not None and local.tls is not None:
        server_context(local.tls)


def check_host_resolves(node: "PacsNode") -> None:
    """PacsError naming the host when it does not resolve (a typo, no DNS), before any association."""
    import socket

    from sarcoscope.errors import ConfigError, PacsError

    try:
        socket.getaddrinfo(node.host, node.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PacsError(f"cannot resolve host {node.host!r} of node {node.name!r} ({exc.strerror}); check "
                        f"[nodes.{node.name}] host or --host (a typo, or no DNS for it here)") from None
    except (UnicodeError, ValueError) as exc:
        raise ConfigError(f"host {node.host!r} of node {node.name!r} is not a valid host name ({exc}); fix "
                          f"[nodes.{node.name}] host or --host") from None


def _warn_url_credentials(node: "PacsNode | None") -> None:
    from sarcoscope.pacs.config import redact_url, url_has_credentials

    if node is not None and url_has_credentials(node.dicomweb_url):
        log.warning("node %r: dicomweb_url %s carries credentials; they are used, but move them to "
                    "[nodes.%s.auth] (secret_file or secret_env; see docs/pacs.md)",
                    node.name, redact_url(node.dicomweb_url), node.name)


def _load(config: Path | None, node_name: str | None, host, port, aet, dicomweb_url, calling_aet, local_port=None,
          work_dir=None, tls_ca=None, tls_cert=None, tls_key=None, timeout_s=None, tls_check_hostname=None,
          audit_log=None):
    from dataclasses import replace

    from sarcoscope.pacs.config import load_config, local_with_overrides, node_with_overrides

    cfg = load_config(config)
    node = node_with_overrides(cfg, node_name, host=host, port=port, ae_title=aet,
                               dicomweb_url=dicomweb_url, timeout_s=timeout_s) if node_name else None
    if node is not None:
        tls = tls_with_overrides(node.tls, tls_ca, tls_cert, tls_key, tls_check_hostname)
        if tls != node.tls:
            node = replace(node, tls=tls)
    local = local_with_overrides(cfg, ae_title=calling_aet, port=local_port, work_dir=work_dir, audit_log=audit_log)
    _warn_url_credentials(node)
    check_tls_files(node)
    _check_audit_dir(local)
    return cfg, node, local


CONFIG_OPT = typer.Option(None, "--config", help="sarcoscope.toml (default: the user's config folder).")
HOST_OPT = typer.Option(None, "--host", help="Override the node's host.")
PORT_OPT = typer.Option(None, "--port", help="Override the node's DICOM port.")
AET_OPT = typer.Option(None, "--aet", help="Override the node's (called) AE title.")
WEB_OPT = typer.Option(None, "--dicomweb-url", help="Override the node's DICOMweb base URL.")
CALLING_OPT = typer.Option(None, "--calling-aet", help="Our AE title (default [local] ae_title).")
TLS_CA_OPT = typer.Option(None, "--tls-ca", help="Use DICOM TLS; verify the PACS with this CA file (also HTTPS).")
TLS_CERT_OPT = typer.Option(None, "--tls-cert", help="Our client certificate for TLS.")
TLS_KEY_OPT = typer.Option(None, "--tls-key", help="Key of --tls-cert.")
TLS_HOST_OPT = typer.Option(None, "--tls-check-hostname/--no-tls-check-hostname",
                            help="Check that the PACS certificate names its host (default [nodes.X.tls] check_hostname, on).")
TIMEOUT_OPT = typer.Option(None, "--timeout-s", help="Override the node's network timeout (seconds).")
AUDIT_OPT = typer.Option(None, "--audit-log", help="Override [local] audit_log (JSON lines file).")


def _console():
    import sys

    from rich.console import Console

    # Piped output (scripts, logs) gets wide tables instead of truncated UIDs.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 240)


def echo_command(
    node: str = typer.Argument(..., help="Node name from the configuration."),
    config: Optional[Path] = CONFIG_OPT, host: Optional[str] = HOST_OPT, port: Optional[int] = PORT_OPT,
    aet: Optional[str] = AET_OPT, calling_aet: Optional[str] = CALLING_OPT,
    tls_ca: Optional[Path] = TLS_CA_OPT, tls_cert: Optional[Path] = TLS_CERT_OPT, tls_key: Optional[Path] = TLS_KEY_OPT,
    tls_check_hostname: Optional[bool] = TLS_HOST_OPT, timeout_s: Optional[float] = TIMEOUT_OPT,
    audit_log: Optional[Path] = AUDIT_OPT,
) -> None:
    """C-ECHO a PACS node: checks network, AE titles and that it answers."""
    from sarcoscope.pacs.audit import AuditLog
    from sarcoscope.pacs.dimse import echo

    _, pnode, local = _load(config, node, host, port, aet, None, calling_aet, tls_ca=tls_ca, tls_cert=tls_cert,
                            tls_key=tls_key, timeout_s=timeout_s, tls_check_hostname=tls_check_hostname,
                            audit_log=audit_log)
    with AuditLog.for_local(local).request(action="echo", node=pnode.name, calling_aet=local.ae_title) as req:
        check_host_resolves(pnode)
        ms = echo(pnode, local.ae_title)
        req.outcome("echo", ms=round(ms, 1))
    _console().print(f"C-ECHO {pnode.describe()} from {local.ae_title}: OK in {ms:.0f} ms")


def find_command(
    node: str = typer.Argument(..., help="Node name from the configuration."),
    patient_id: Optional[str] = typer.Option(None, "--patient-id"),
    accession: Optional[str] = typer.Option(None, "--accession"),
    date_range: Optional[str] = typer.Option(None, "--date-range", help="YYYYMMDD-YYYYMMDD (either end may be empty)."),
    modality: Optional[str] = typer.Option(None, "--modality", help="e.g. CT"),
    web: bool = typer.Option(False, "--web", help="Query by QIDO-RS instead of C-FIND."),
    config: Optional[Path] = CONFIG_OPT, host: Optional[str] = HOST_OPT, port: Optional[int] = PORT_OPT,
    aet: Optional[str] = AET_OPT, dicomweb_url: Optional[str] = WEB_OPT, calling_aet: Optional[str] = CALLING_OPT,
    tls_ca: Optional[Path] = TLS_CA_OPT, tls_cert: Optional[Path] = TLS_CERT_OPT, tls_key: Optional[Path] = TLS_KEY_OPT,
    tls_check_hostname: Optional[bool] = TLS_HOST_OPT, timeout_s: Optional[float] = TIMEOUT_OPT,
    audit_log: Optional[Path] = AUDIT_OPT,
) -> None:
    """Find studies (C-FIND or QIDO-RS) and print them as a table."""
    import re

    from rich.table import Table

    from sarcoscope.errors import ConfigError
    from sarcoscope.pacs import dimse
    from sarcoscope.pacs.audit import AuditLog

    date_from = date_to = None
    if date_range:
        m = re.fullmatch(r"(\d{8})?-(\d{8})?|(\d{8})", date_range.strip())
        if not m:
            raise ConfigError(f"--date-range {date_range!r}: use YYYYMMDD-YYYYMMDD, YYYYMMDD- or -YYYYMMDD")
        date_from, date_to = (m.group(3), m.group(3)) if m.group(3) else (m.group(1), m.group(2))
    _, pnode, local = _load(config, node, host, port, aet, dicomweb_url, calling_aet, tls_ca=tls_ca,
                            tls_cert=tls_cert, tls_key=tls_key, timeout_s=timeout_s,
                            tls_check_hostname=tls_check_hostname, audit_log=audit_log)
    query = dimse.StudyQuery(patient_id=patient_id, accession=accession, date_from=date_from,
                             date_to=date_to, modality=modality)
    audit = AuditLog.for_local(local)
    with audit.request(action="find", node=pnode.name, calling_aet=local.ae_title, via="qido" if web else "c-find",
                       patient_id_hmac=audit.digest(patient_id) if patient_id else "",
                       accession_hmac=audit.digest(accession) if accession else "", date_range=date_range or "",
                       modality=modality or "") as req:
        if web:
            from sarcoscope.pacs.web import qido_studies

            studies = qido_studies(pnode, query)
        else:
            check_host_resolves(pnode)
            studies = dimse.find_studies(pnode, local.ae_title, query)
        req.outcome("find", n_results=len(studies))
    table = Table(title=f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} on {pnode.describe()}")
    for col in ("Patient ID", "Accession", "Date", "Modalities", "Series", "Images", "Description", "StudyInstanceUID"):
        table.add_column(col)
    for s in studies:
        table.add_row(s.patient_id, s.accession, s.study_date, "/".join(s.modalities),
                      "" if s.n_series is None else str(s.n_series), "" if s.n_instances is None else str(s.n_instances),
                      s.description, s.study_uid)
    _console().print(table)


def analyze_pacs_command(
    node: str = typer.Argument(..., help="Node name from the configuration."),
    study: Optional[str] = typer.Option(None, "--study", help="StudyInstanceUID."),
    accession: Optional[str] = typer.Option(None, "--accession", help="Accession number (must match one study)."),
    via: Via = typer.Option(Via.get, "--via", help="Retrieve by C-GET (default), C-MOVE to our SCP, or WADO-RS."),
    send_back: bool = typer.Option(False, "--send-back", help="Store SEG, SR and key image into the study."),
    send_via: SendVia = typer.Option(SendVia.store, "--send-via", help="C-STORE (default) or STOW-RS."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results folder (default: work_dir/results/<study>)."),
    slices: Optional[str] = typer.Option(None, "--slices", help="Analyse these slices instead of finding L3."),
    segmenter: Optional[str] = typer.Option(None, "--segmenter", help="baseline or model."),
    height_cm: Optional[float] = typer.Option(None, "--height-cm"),
    weight_kg: Optional[float] = typer.Option(None, "--weight-kg"),
    sex: Optional[str] = typer.Option(None, "--sex"),
    reference: Optional[str] = typer.Option(None, "--reference"),
    keep_images: bool = typer.Option(False, "--keep-images", help="Keep the retrieved images in work_dir."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Override [local] work_dir."),
    local_port: Optional[int] = typer.Option(None, "--local-port", help="Our storage SCP port for --via move."),
    config: Optional[Path] = CONFIG_OPT, host: Optional[str] = HOST_OPT, port: Optional[int] = PORT_OPT,
    aet: Optional[str] = AET_OPT, dicomweb_url: Optional[str] = WEB_OPT, calling_aet: Optional[str] = CALLING_OPT,
    tls_ca: Optional[Path] = TLS_CA_OPT, tls_cert: Optional[Path] = TLS_CERT_OPT, tls_key: Optional[Path] = TLS_KEY_OPT,
    tls_check_hostname: Optional[bool] = TLS_HOST_OPT, timeout_s: Optional[float] = TIMEOUT_OPT,
    audit_log: Optional[Path] = AUDIT_OPT,
) -> None:
    """Retrieve the study's CT series from the PACS, analyse it, optionally send the results back."""
    from sarcoscope.cli.analyze import print_result
    from sarcoscope.errors import ConfigError
    from sarcoscope.settings import AnalysisSettings

    from sarcoscope.pacs.uids import is_valid_uid

    if bool(study) == bool(accession):
        raise ConfigError("give exactly one of --study UID or --accession NUMBER")
    if study and not is_valid_uid(study):
        raise ConfigError(f"--study {study[:80]!r} is not a DICOM UID (digits and dots, no leading zeros, at most "
                          "64 characters, e.g. 1.2.840.113619.2.55.3.1234); give the StudyInstanceUID shown by "
                          "`sarcoscope pacs find`")
    _, pnode, local = _load(config, node, host, port, aet, dicomweb_url, calling_aet, local_port, work_dir,
                            tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, timeout_s=timeout_s,
                            tls_check_hostname=tls_check_hostname, audit_log=audit_log)
    check_tls_files(local=local, server=via == Via.move)  # our receiver for C-MOVE
    if via != Via.wado or (send_back and send_via == SendVia.store):
        check_host_resolves(pnode)
    settings = AnalysisSettings(slices=slices, segmenter=segmenter, height_cm=height_cm, weight_kg=weight_kg,
                                sex=sex, reference=reference)
    run = run_pacs_analysis(pnode, local, settings, study_uid=study, accession=accession, via=via.value,
                            send_back=send_back, send_via=send_via.value, out_dir=out, keep_images=keep_images)
    console = _console()
    print_result(console, run.result)
    t = run.timings_s
    console.print("time: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()), style="dim")
    for f in run.files:
        console.print(f"wrote {f}", markup=False)
    if send_back:
        console.print(f"sent {len(run.stored_uids)} object(s) (SEG, SR, key image) to {pnode.describe()} "
                      f"into study {run.study_uid}", markup=False)


def node_settings(
    config: Path | None = None, *, send_to: str | None = None, send_host: str | None = None,
    send_port: int | None = None, send_aet: str | None = None, send_dicomweb_url: str | None = None,
    send_timeout_s: float | None = None, port: int | None = None, ae_title: str | None = None,
    work_dir: Path | None = None, audit_log: Path | None = None, bind: str | None = None,
    allow_aet: list[str] | None = None, allow_peer: list[str] | None = None, quiet_period_s: float | None = None,
    max_attempts: int | None = None, retry_base_s: float | None = None, retry_max_s: float | None = None,
    tls_cert: Path | None = None, tls_key: Path | None = None, tls_ca: Path | None = None,
    send_tls_ca: Path | None = None, send_tls_cert: Path | None = None, send_tls_key: Path | None = None,
) -> tuple["LocalNode", "PacsNode"]:
    """``sarcoscope node``'s receiver and send target: the configuration with every command-line
    value (non-None) replacing the configured one."""
    from sarcoscope.errors import ConfigError
    from sarcoscope.pacs.config import load_config, local_with_overrides, node_with_overrides

    cfg = load_config(config)
    local = local_with_overrides(
        cfg, port=port, ae_title=ae_title, work_dir=work_dir, audit_log=audit_log, quiet_period_s=quiet_period_s,
        send_back_to=send_to, bind=bind, max_attempts=max_attempts, retry_base_s=retry_base_s,
        retry_max_s=retry_max_s, allowed_calling_aets=tuple(allow_aet) if allow_aet else None,
        allowed_peers=tuple(allow_peer) if allow_peer else None,
        tls=tls_with_overrides(cfg.local.tls, tls_ca, tls_cert, tls_key),
    )
    if not local.send_back_to:
        raise ConfigError("sarcoscope node needs a node to send results to: --send-to NODE or [local] send_back_to")
    target = node_with_overrides(cfg, local.send_back_to, host=send_host, port=send_port, ae_title=send_aet,
                                 dicomweb_url=send_dicomweb_url, timeout_s=send_timeout_s)
    send_tls = tls_with_overrides(target.tls, send_tls_ca, send_tls_cert, send_tls_key)
    if send_tls != target.tls:
        from dataclasses import replace

        target = replace(target, tls=send_tls)
    _check_audit_dir(local)
    check_tls_files(target, local, server=True, options="--send-tls-*")
    _warn_url_credentials(target)
    if target.auth is not None:  # a missing secret must stop the node now, not fail every study later
        target.auth.secret(f"[nodes.{target.name}.auth]")
    return local, target


def node_command(
    send_to: Optional[str] = typer.Option(None, "--send-to", help="Node to send results to (default [local] send_back_to)."),
    send_via: SendVia = typer.Option(SendVia.store, "--send-via"),
    send_host: Optional[str] = typer.Option(None, "--send-host", help="Override the send-to node's host."),
    send_port: Optional[int] = typer.Option(None, "--send-port", help="Override the send-to node's DICOM port."),
    send_aet: Optional[str] = typer.Option(None, "--send-aet", help="Override the send-to node's AE title."),
    send_dicomweb_url: Optional[str] = typer.Option(None, "--send-dicomweb-url",
                                                    help="Override the send-to node's DICOMweb URL (--send-via stow)."),
    send_timeout_s: Optional[float] = typer.Option(None, "--send-timeout-s", help="Override the send-to node's timeout."),
    port: Optional[int] = typer.Option(None, "--port", help="Our storage SCP port (default [local] port)."),
    ae_title: Optional[str] = typer.Option(None, "--ae-title", help="Our AE title (default [local] ae_title)."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir"),
    audit_log: Optional[Path] = AUDIT_OPT,
    bind: Optional[str] = typer.Option(None, "--bind", help="Address to listen on (default [local] bind)."),
    allow_aet: Optional[list[str]] = typer.Option(None, "--allow-aet", help="Allowed calling AE title (repeat)."),
    allow_peer: Optional[list[str]] = typer.Option(None, "--allow-peer", help="Allowed peer address (repeat)."),
    quiet_period_s: Optional[float] = typer.Option(None, "--quiet-period-s", help="Seconds without new images = study complete."),
    max_attempts: Optional[int] = typer.Option(None, "--max-attempts", help="Tries per job (default [local] max_attempts)."),
    retry_base_s: Optional[float] = typer.Option(None, "--retry-base-s", help="First retry delay; doubles each time."),
    retry_max_s: Optional[float] = typer.Option(None, "--retry-max-s", help="Longest retry delay."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="Our receiver's TLS certificate ([local.tls] cert_file); TLS only."),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="Key of --tls-cert ([local.tls] key_file)."),
    tls_ca: Optional[Path] = typer.Option(None, "--tls-ca", help="Senders must present a certificate signed by this CA ([local.tls] ca_file)."),
    send_tls_ca: Optional[Path] = typer.Option(None, "--send-tls-ca", help="Verify the send-to node with this CA (TLS)."),
    send_tls_cert: Optional[Path] = typer.Option(None, "--send-tls-cert", help="Our client certificate towards the send-to node."),
    send_tls_key: Optional[Path] = typer.Option(None, "--send-tls-key", help="Key of --send-tls-cert."),
    slices: Optional[str] = typer.Option(None, "--slices", help="Analyse these slices instead of finding L3."),
    segmenter: Optional[str] = typer.Option(None, "--segmenter", help="baseline or model."),
    config: Optional[Path] = CONFIG_OPT,
) -> None:
    """Run a DICOM receiver: analyse studies routed to us and send the results back (Ctrl-C stops)."""
    import signal
    import threading

    from sarcoscope.pacs import workflow
    from sarcoscope.pacs.audit import AuditLog
    from sarcoscope.pacs.node import Node
    from sarcoscope.settings import AnalysisSettings

    local, target = node_settings(
        config, send_to=send_to, send_host=send_host, send_port=send_port, send_aet=send_aet,
        send_dicomweb_url=send_dicomweb_url, send_timeout_s=send_timeout_s, port=port, ae_title=ae_title,
        work_dir=work_dir, audit_log=audit_log, bind=bind, allow_aet=allow_aet, allow_peer=allow_peer,
        quiet_period_s=quiet_period_s, max_attempts=max_attempts, retry_base_s=retry_base_s,
        retry_max_s=retry_max_s, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca,
        send_tls_ca=send_tls_ca, send_tls_cert=send_tls_cert, send_tls_key=send_tls_key)
    if send_via == SendVia.store:
        check_host_resolves(target)
    settings = AnalysisSettings(slices=slices, segmenter=segmenter)
    audit = AuditLog.for_local(local)

    def process(folder: Path, out: Path) -> list[Path]:
        return analyse_folder(folder, settings, out)[1]

    def send(files) -> list[str]:
        return workflow.send_files(target, local, list(files), send_via.value)

    node = Node(local, process, send, audit, send_via=send_via.value).start()
    _console().print(f"sarcoscope node {local.ae_title} listening on {local.bind}:{node.scp.port}; "
                     f"results go to {target.describe()}", markup=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, lambda *_: stop.set())
        except ValueError:  # not in the main thread
            pass
    try:
        while not stop.wait(0.5):
            pass
    finally:
        node.stop()


def register(app: typer.Typer) -> None:
    pacs_app = typer.Typer(help="Query a PACS, analyse a study from it, send results back.",
                           no_args_is_help=True, add_completion=False)
    pacs_app.command("echo")(echo_command)
    pacs_app.command("find")(find_command)
    pacs_app.command("analyze")(analyze_pacs_command)
    app.add_typer(pacs_app, name="pacs")
    app.command("node")(node_command)
