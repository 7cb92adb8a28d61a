"""Every configuration value can be set on the command line, and the command-line value wins.

The node's own TLS (``[local.tls]``) is checked for real: ``sarcoscope node`` is started with a
configuration naming one certificate and ``--tls-cert/--tls-key`` naming another; a TLS echo that
trusts only the command-line certificate's CA must succeed, one that trusts only the configured
one must fail.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sarcoscope.errors import ConfigError, PacsError
from sarcoscope.pacs.config import PacsNode, TlsSettings
from tests.conftest import REPO_ROOT
from tests.unit.test_pacs import _free_port, _make_certs


def _write_config(tmp_path: Path, certs: tuple[Path, Path, Path]) -> Path:
    ca, cert, key = certs
    cfg = tmp_path / "sarcoscope.toml"
    cfg.write_text(
        f'[local]\nae_title = "CFGNODE"\nport = 1\nbind = "127.0.0.1"\nwork_dir = "{tmp_path / "w"}"\n'
        f'audit_log = "{tmp_path / "cfg-audit.jsonl"}"\nsend_back_to = "pacs"\nquiet_period_s = 10\n'
        'max_attempts = 6\nretry_base_s = 5\nretry_max_s = 600\nallowed_calling_aets = ["CFGAET"]\n'
        'allowed_peers = ["10.0.0.5"]\n'
        f'[local.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\nca_file = "{ca}"\n'
        '[nodes.pacs]\nae_title = "ORTHANC"\nhost = "10.0.0.5"\nport = 4242\ntimeout_s = 30\n'
        'dicomweb_url = "https://pacs.example.org/dicom-web"\n'
        f'[nodes.pacs.tls]\nca_file = "{ca}"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    )
    return cfg


def test_node_settings_command_line_overrides_config(tmp_path: Path) -> None:
    from sarcoscope.cli.pacs import node_settings

    cfg_certs = _make_certs(tmp_path)
    (tmp_path / "cli").mkdir()
    cli_ca, cli_cert, cli_key = _make_certs(tmp_path / "cli")
    cfg = _write_config(tmp_path, cfg_certs)
    local, target = node_settings(cfg)  # nothing on the command line: the configuration as written
    assert local.tls == TlsSettings(ca_file=cfg_certs[0], cert_file=cfg_certs[1], key_file=cfg_certs[2])
    assert (local.port, local.quiet_period_s, local.max_attempts) == (1, 10, 6)
    local, target = node_settings(
        cfg, send_host="127.0.0.1", send_port=11999, send_aet="OTHERPACS", send_timeout_s=3.5,
        send_dicomweb_url="http://127.0.0.1:1/dicom-web", port=0, ae_title="CLINODE", work_dir=tmp_path / "cw",
        audit_log=tmp_path / "cli-audit.jsonl", bind="0.0.0.0", allow_aet=["A1", "A2"], allow_peer=["127.0.0.1"],
        quiet_period_s=0.25, max_attempts=2, retry_base_s=0.5, retry_max_s=9,
        tls_cert=cli_cert, tls_key=cli_key, tls_ca=cli_ca,
    )
    assert local.tls == TlsSettings(ca_file=cli_ca, cert_file=cli_cert, key_file=cli_key)
    assert (local.ae_title, local.port, local.bind, local.work_dir, local.audit_path) == (
        "CLINODE", 0, "0.0.0.0", tmp_path / "cw", tmp_path / "cli-audit.jsonl")
    assert (local.allowed_calling_aets, local.allowed_peers) == (("A1", "A2"), ("127.0.0.1",))
    assert (local.quiet_period_s, local.max_attempts, local.retry_base_s, local.retry_max_s) == (0.25, 2, 0.5, 9)
    assert (target.host, target.port, target.ae_title, target.timeout_s, target.dicomweb_url) == (
        "127.0.0.1", 11999, "OTHERPACS", 3.5, "http://127.0.0.1:1/dicom-web")
    # only --tls-ca: the configured certificate pair stays, the CA changes
    local, _ = node_settings(cfg, tls_ca=cli_ca)
    assert local.tls == TlsSettings(ca_file=cli_ca, cert_file=cfg_certs[1], key_file=cfg_certs[2])
    # a certificate without its key is refused with a message naming both
    with pytest.raises(ConfigError, match=r"cert_file .* and key_file \(None\) must be given together"):
        node_settings(cfg, tls_cert=cli_cert)
    # the send-to node's TLS is settable on the command line too, independently of the receiver's
    _, target = node_settings(cfg, send_tls_ca=cli_ca, send_tls_cert=cli_cert, send_tls_key=cli_key)
    assert target.tls == TlsSettings(ca_file=cli_ca, cert_file=cli_cert, key_file=cli_key)


def test_pacs_options_override_config(tmp_path: Path) -> None:
    from sarcoscope.cli.pacs import _load

    cfg_certs = _make_certs(tmp_path)
    cfg = _write_config(tmp_path, cfg_certs)
    _, node, local = _load(cfg, "pacs", None, None, None, None, None)
    assert node.timeout_s == 30 and node.tls.check_hostname and local.audit_path == tmp_path / "cfg-audit.jsonl"
    _, node, local = _load(cfg, "pacs", None, None, None, None, None, timeout_s=4.0, tls_check_hostname=False,
                           audit_log=tmp_path / "a.jsonl", tls_ca=cfg_certs[1])
    assert node.timeout_s == 4.0 and node.tls.check_hostname is False and node.tls.ca_file == cfg_certs[1]
    assert node.tls.cert_file == cfg_certs[1] and local.audit_path == tmp_path / "a.jsonl"


def _node_cli(cfg: Path, args: list[str], log: Path) -> subprocess.Popen:
    code = "import sys; from sarcoscope.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, "node", "--config", str(cfg), *args],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=REPO_ROOT)


def test_node_cli_tls_certificate_overrides_config(tmp_path: Path) -> None:
    """The real receiver serves the command-line certificate, not the configured one."""
    from sarcoscope.pacs import dimse

    cfg_ca, cfg_cert, cfg_key = _make_certs(tmp_path)
    (tmp_path / "cli").mkdir()
    cli_ca, cli_cert, cli_key = _make_certs(tmp_path / "cli")
    cfg = tmp_path / "sarcoscope.toml"
    cfg.write_text(
        f'[local]\nae_title = "SARCONODE"\nwork_dir = "{tmp_path / "w"}"\nsend_back_to = "pacs"\n'
        f'[local.tls]\ncert_file = "{cfg_cert}"\nkey_file = "{cfg_key}"\n'
        '[nodes.pacs]\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = 1\n'
    )
    port = _free_port()
    proc = _node_cli(cfg, ["--port", str(port), "--tls-cert", str(cli_cert), "--tls-key", str(cli_key)],
                     tmp_path / "node.log")
    try:
        trusts_cli = PacsNode("n", "SARCONODE", "127.0.0.1", port, tls=TlsSettings(ca_file=cli_ca), timeout_s=3)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert dimse.echo(trusts_cli, "ANY") > 0
                break
            except PacsError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("node never answered a TLS echo with the command-line certificate:\n"
                                         + (tmp_path / "node.log").read_text(errors="replace")[-2000:])
                time.sleep(0.2)
        trusts_cfg = PacsNode("n", "SARCONODE", "127.0.0.1", port, tls=TlsSettings(ca_file=cfg_ca), timeout_s=3)
        with pytest.raises(PacsError, match=r"PACS n .*closed the association.*certificate is not trusted"):
            dimse.echo(trusts_cfg, "ANY")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
