"""PACS configuration: named nodes (AE titles, host, port, DICOMweb URL, TLS) from a TOML file.

The file is ``sarcoscope.toml`` given by ``--config`` or found in the user's config directory
(``$XDG_CONFIG_HOME/sarcoscope`` / ``~/.config/sarcoscope`` / ``%APPDATA%\\sarcoscope``).
Every value can be overridden on the command line (``with_overrides``). Example::

    [local]                      # us: the calling AE for queries, the receiver for C-MOVE/node
    ae_title = "SARCOSCOPE"
    port = 11112                 # storage SCP port (C-MOVE destination, `sarcoscope node`)
    bind = "127.0.0.1"
    allowed_calling_aets = ["ORTHANC"]   # empty = accept any calling AE
    allowed_peers = ["127.0.0.1"]        # empty = any address
    work_dir = "/var/lib/sarcoscope"     # retrieved series, queue, results
    audit_log = "/var/log/sarcoscope/audit.jsonl"
    send_back_to = "pacs"                # node that `sarcoscope node` sends results to
    quiet_period_s = 10

    [nodes.pacs]
    ae_title = "ORTHANC"
    host = "10.0.0.5"
    port = 104
    dicomweb_url = "https://pacs.example.org/dicom-web"
    [nodes.pacs.tls]             # optional DICOM TLS (and CA bundle for HTTPS)
    ca_file = "ca.pem"
    cert_file = "client.pem"
    key_file = "client.key"
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sarcoscope.errors import ConfigError

_AET_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire, no backslash

CONFIG_NAME = "sarcoscope.toml"


def default_config_path() -> Path:
    """Where the configuration lives when ``--config`` is not given."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "sarcoscope" / CONFIG_NAME


def check_ae_title(value: str, what: str) -> str:
    """Return the AE title stripped, or raise ConfigError saying which value is wrong."""
    if not isinstance(value, str) or not _AET_RE.match(value) or not value.strip():
        raise ConfigError(
            f"{what}: AE title {value!r} is invalid; use 1-16 printable ASCII characters "
            "without backslash (e.g. 'SARCOSCOPE')"
        )
    return value.strip()


@dataclass(frozen=True)
class TlsSettings:
    """Optional TLS for DICOM associations; ``ca_file`` also verifies HTTPS for DICOMweb."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError(
                f"TLS: cert_file ({self.cert_file}) and key_file ({self.key_file}) must be given together"
            )
        for name in ("ca_file", "cert_file", "key_file"):
            p = getattr(self, name)
            if p is not None and not Path(p).is_file():
                raise ConfigError(f"TLS: {name} {p} does not exist; fix the path in the configuration")


@dataclass(frozen=True)
class PacsNode:
    """A remote DICOM node (PACS): where to query, retrieve from and send results to."""

    name: str
    ae_title: str
    host: str
    port: int
    dicomweb_url: str | None = None
    tls: TlsSettings | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, f"node {self.name!r} ae_title")
        if not self.host:
            raise ConfigError(f"node {self.name!r}: host is empty; set host = \"pacs.example.org\"")
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ConfigError(f"node {self.name!r}: port {self.port!r} must be an integer 1-65535")
        if self.dicomweb_url is not None and not re.match(r"^https?://", self.dicomweb_url):
            raise ConfigError(
                f"node {self.name!r}: dicomweb_url {self.dicomweb_url!r} must start with http:// or https://"
            )
        if self.timeout_s <= 0:
            raise ConfigError(f"node {self.name!r}: timeout_s {self.timeout_s} must be > 0")

    def describe(self) -> str:
        tls = " (TLS)" if self.tls else ""
        return f"{self.name} = {self.ae_title}@{self.host}:{self.port}{tls}"


@dataclass(frozen=True)
class LocalNode:
    """Us: calling AE title for SCU work, and the storage SCP (C-MOVE target, ``sarcoscope node``)."""

    ae_title: str = "SARCOSCOPE"
    port: int = 11112
    bind: str = "127.0.0.1"
    allowed_calling_aets: tuple[str, ...] = ()
    allowed_peers: tuple[str, ...] = ()
    work_dir: Path = field(default_factory=lambda: Path.home() / ".sarcoscope")
    audit_log: Path | None = None
    send_back_to: str | None = None
    quiet_period_s: float = 10.0
    max_attempts: int = 6
    retry_base_s: float = 5.0
    retry_max_s: float = 600.0
    tls: TlsSettings | None = None

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, "local ae_title")
        for aet in self.allowed_calling_aets:
            check_ae_title(aet, "local allowed_calling_aets")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"local port {self.port!r} must be an integer 0-65535")
        if self.quiet_period_s < 0 or self.retry_base_s < 0 or self.max_attempts < 1:
            raise ConfigError(
                "local: quiet_period_s and retry_base_s must be >= 0 and max_attempts >= 1 "
                f"(got {self.quiet_period_s}, {self.retry_base_s}, {self.max_attempts})"
            )

    @property
    def audit_path(self) -> Path:
        return self.audit_log if self.audit_log is not None else self.work_dir / "audit.jsonl"


@dataclass(frozen=True)
class PacsConfig:
    local: LocalNode
    nodes: dict[str, PacsNode]
    path: Path | None = None

    def node(self, name: str) -> PacsNode:
        """The node called ``name``; ConfigError listing the known names otherwise."""
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(sorted(self.nodes)) or "none"
            where = self.path or default_config_path()
            raise ConfigError(
                f"PACS node {name!r} is not configured in {where} (known: {known}); "
                f"add a [nodes.{name}] table or give --host/--port/--aet"
            ) from None


def _tls(raw: Any, where: str, base: Path) -> TlsSettings | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: tls must be a table")

    def p(key: str) -> Path | None:
        v = raw.get(key)
        if v is None:
            return None
        path = Path(v).expanduser()
        return path if path.is_absolute() else base / path

    unknown = set(raw) - {"ca_file", "cert_file", "key_file", "check_hostname"}
    if unknown:
        raise ConfigError(f"{where}: unknown tls keys {sorted(unknown)}")
    return TlsSettings(p("ca_file"), p("cert_file"), p("key_file"), bool(raw.get("check_hostname", True)))


def _build(cls: type, raw: dict[str, Any], where: str, extra: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)} - set(extra)
    unknown = set(raw) - known - {"tls"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(known)}")
    kwargs = {k: v for k, v in raw.items() if k != "tls"}
    kwargs.update(extra)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_config(data: dict[str, Any], path: Path | None = None) -> PacsConfig:
    """Build a PacsConfig from the parsed TOML table (``path`` resolves relative files)."""
    base = path.parent if path else Path.cwd()
    where = str(path) if path else "configuration"
    raw_local = dict(data.get("local", {}))
    for key in ("allowed_calling_aets", "allowed_peers"):
        if key in raw_local:
            raw_local[key] = tuple(raw_local[key])
    for key in ("work_dir", "audit_log"):
        if key in raw_local:
            v = Path(raw_local[key]).expanduser()
            raw_local[key] = v if v.is_absolute() else base / v
    local = _build(
        LocalNode, raw_local, f"{where} [local]", {"tls": _tls(raw_local.get("tls"), f"{where} [local]", base)}
    )
    nodes: dict[str, PacsNode] = {}
    raw_nodes = data.get("nodes", {})
    if not isinstance(raw_nodes, dict):
        raise ConfigError(f"{where}: [nodes] must be a table of tables")
    for name, raw in raw_nodes.items():
        w = f"{where} [nodes.{name}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{w} must be a table")
        nodes[name] = _build(PacsNode, raw, w, {"name": name, "tls": _tls(raw.get("tls"), w, base)})
    if local.send_back_to is not None and local.send_back_to not in nodes:
        raise ConfigError(
            f"{where} [local] send_back_to = {local.send_back_to!r} names no configured node "
            f"(known: {', '.join(sorted(nodes)) or 'none'})"
        )
    return PacsConfig(local=local, nodes=nodes, path=path)


def load_config(path: Path | None = None) -> PacsConfig:
    """Read the TOML file (``path`` or the default location; a missing default gives an empty config)."""
    explicit = path is not None
    path = Path(path) if path is not None else default_config_path()
    if not path.is_file():
        if explicit:
            raise ConfigError(f"configuration file {path} does not exist; create it (see docs/pacs.md)")
        return PacsConfig(local=LocalNode(), nodes={}, path=None)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    return parse_config(data, path)


def node_with_overrides(
    config: PacsConfig,
    name: str,
    *,
    host: str | None = None,
    port: int | None = None,
    ae_title: str | None = None,
    dicomweb_url: str | None = None,
    timeout_s: float | None = None,
) -> PacsNode:
    """The named node with command-line overrides; an unknown name is fine if host+port are given."""
    if name not in config.nodes and host is not None and port is not None:
        node = PacsNode(name=name, ae_title=ae_title or "ANY-SCP", host=host, port=port)
    else:
        node = config.node(name)  # ConfigError naming the known nodes when unknown
    changes = {
        k: v
        for k, v in dict(host=host, port=port, ae_title=ae_title, dicomweb_url=dicomweb_url,
                         timeout_s=timeout_s).items()
        if v is not None
    }
    return replace(node, **changes) if changes else node


def local_with_overrides(config: PacsConfig, **changes: Any) -> LocalNode:
    """The local node with the non-None command-line overrides applied."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return replace(config.local, **changes) if changes else config.local
