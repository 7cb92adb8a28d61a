"""TLS contexts for DICOM associations (pynetdicom takes a standard ``ssl.SSLContext``)."""

from __future__ import annotations

import ssl

from sarcoscope.pacs.config import TlsSettings


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """Context for connecting to a TLS PACS: verify it with ``ca_file``, present our cert if set."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None)
    ctx.check_hostname = tls.check_hostname
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return ctx


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """Context for our storage SCP: our cert; when ``ca_file`` is set, peers must present a cert it signed."""
    if not (tls.cert_file and tls.key_file):
        from sarcoscope.errors import ConfigError

        raise ConfigError("[local.tls] needs cert_file and key_file to accept TLS associations")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None)
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.ca_file else ssl.CERT_NONE
    return ctx
