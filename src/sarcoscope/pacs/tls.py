"""TLS contexts for DICOM associations (pynetdicom takes a standard ``ssl.SSLContext``).

A file that OpenSSL cannot use (not PEM, no certificate in it, a key that does not belong to the
certificate, an encrypted key) is a configuration mistake: ``ConfigError`` naming the file and
the setting, never a raw ``ssl.SSLError``. Keys are loaded without ever prompting for a pass
phrase (a service has no terminal).
"""

from __future__ import annotations

import re
import ssl

from sarcoscope.errors import ConfigError
from sarcoscope.pacs.config import TlsSettings


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text).replace("[SSL] PEM lib", "not a usable PEM file")


def _no_pass_phrase() -> bytes:
    # An encrypted key fails to load instead of OpenSSL asking on the terminal.
    return b""


def _load_ca(purpose: ssl.Purpose, tls: TlsSettings, where: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(purpose, cafile=str(tls.ca_file) if tls.ca_file else None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"{where}: ca_file {tls.ca_file} cannot be used as a CA certificate ({_reason(exc)}); give a PEM "
            "file holding the CA certificate (-----BEGIN CERTIFICATE-----) that signed the peer's certificate"
        ) from None


def _load_pair(ctx: ssl.SSLContext, tls: TlsSettings, where: str) -> None:
    try:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=_no_pass_phrase)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = _reason(exc)
        if "KEY_VALUES_MISMATCH" in reason:
            detail = ("the key does not belong to the certificate; give the key_file generated together with "
                      "that cert_file")
        else:
            detail = (f"{reason}; cert_file must be a PEM certificate and key_file its PEM private key, not "
                      "encrypted")
        raise ConfigError(
            f"{where}: cert_file {tls.cert_file} and key_file {tls.key_file} cannot be loaded: {detail}"
        ) from None


def client_context(tls: TlsSettings, where: str = "TLS") -> ssl.SSLContext:
    """Context for connecting to a TLS PACS: verify it with ``ca_file``, present our cert if set.

    ``where`` names the settings in messages (e.g. ``"node 'pacs' TLS ([nodes.pacs.tls] / --tls-*)"``).
    """
    ctx = _load_ca(ssl.Purpose.SERVER_AUTH, tls, where)
    ctx.check_hostname = tls.check_hostname
    if tls.cert_file and tls.key_file:
        _load_pair(ctx, tls, where)
    return ctx


def server_context(tls: TlsSettings, where: str = "TLS of our receiver ([local.tls] / --tls-*)") -> ssl.SSLContext:
    """Context for our storage SCP: our cert; when ``ca_file`` is set, peers must present a cert it signed."""
    if not (tls.cert_file and tls.key_file):
        raise ConfigError("[local.tls] needs cert_file and key_file to accept TLS associations")
    ctx = _load_ca(ssl.Purpose.CLIENT_AUTH, tls, where)
    _load_pair(ctx, tls, where)
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.ca_file else ssl.CERT_NONE
    return ctx
