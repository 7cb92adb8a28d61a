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
    [nodes.pacs.auth]            # optional DICOMweb credentials (never inline: a file or a variable)
    type = "basic"               # or "bearer" (a token)
    username = "sarcoscope"
    secret_file = "/etc/sarcoscope/pacs.password"   # or secret_env = "SARCOSCOPE_PACS_PASSWORD"
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
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sarcoscope.errors import ConfigError

_AET_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire, no backslash

CONFIG_NAME = "sarcoscope.toml"

# -- redaction ------------------------------------------------------------------------------------
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#]*@")
_URL_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:access_token|token|api_?key|key|password|passwd|pwd|secret|sig|signature|auth|"
    r"patientid|patientname|patientbirthdate|accessionnumber|00100010|00100020|00100030|00080050)=)[^&#;\s]*"
)


def redact_url(text: object) -> str:
    """``text`` (a URL, or any message containing URLs) with credentials and identifiers removed.

    ``https://user:pass@host/x`` becomes ``https://***@host/x``; the values of query parameters
    that carry secrets (``token=``, ``password=``, ``sig=`` …) or patient identifiers
    (``PatientID=``, ``AccessionNumber=`` …) become ``***``. Use it wherever a DICOMweb URL, or
    an exception text that may contain one, goes into a message, a log line, the audit log or
    the job queue.
    """
    if text is None:
        return ""
    return _URL_SECRET_PARAM.sub(r"\1***", _URL_USERINFO.sub(r"\1***@", str(text)))


def url_has_credentials(url: str | None) -> bool:
    """Whether ``url`` carries ``user[:password]@`` (prefer ``[nodes.X.auth]``)."""
    return bool(url) and bool(_URL_USERINFO.search(str(url)))


# -- type checks ----------------------------------------------------------------------------------
#: What each kind of value must be, as said in messages.
_EXPECTED = {
    "str": "a string", "int": "an integer", "number": "a number", "bool": "true or false",
    "strlist": "a list of strings", "path": "a path string", "table": "a table",
}


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "a list", tuple: "a list", dict: "a table"}
    if isinstance(value, (list, tuple)) and value and not all(isinstance(v, str) for v in value):
        bad = next(v for v in value if not isinstance(v, str))
        return f"a list holding {names.get(type(bad), type(bad).__name__)}"
    return names.get(type(value), type(value).__name__)


def _type_ok(value: object, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "strlist":
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if kind == "path":
        return isinstance(value, (str, os.PathLike))
    if kind == "table":
        return isinstance(value, dict)
    raise ValueError(kind)


def check_type(value: object, kind: str, key: str, where: str, example: str | None = None) -> None:
    """ConfigError naming ``key``, the expected type and the type given, unless ``value`` fits ``kind``.

    Strict on purpose: ``allowed_peers = "10.0.0.5"`` must not become ten one-character
    addresses, nor ``check_hostname = "no"`` a true value.
    """
    if _type_ok(value, kind):
        return
    eg = f" (e.g. {example})" if example else ""
    raise ConfigError(
        f"{where}: {key} must be {_EXPECTED[kind]}{eg}, got {_type_name(value)}{_shown(value, key, where)}; "
        "fix it in the configuration"
    )


#: Keys whose values may be (or be mistaken for) a secret: their values are never shown.
_SECRET_KEYS = frozenset({"auth", "secret_file", "secret_env", "username", "password", "token"})


def _shown(value: object, key: str, where: str) -> str:
    """`` <value>`` for a message, or "" where the value could be a password pasted by mistake."""
    if key in _SECRET_KEYS or "auth" in where:
        return ""
    return " " + redact_url(repr(value))[:80]


#: Expected kind and an example of every key, per table.
_NODE_KEYS = {
    "ae_title": ("str", 'ae_title = "ORTHANC"'), "host": ("str", 'host = "pacs.example.org"'),
    "port": ("int", "port = 104"), "dicomweb_url": ("str", 'dicomweb_url = "https://pacs.example.org/dicom-web"'),
    "timeout_s": ("number", "timeout_s = 30"), "tls": ("table", None), "auth": ("table", None),
}
_LOCAL_KEYS = {
    "ae_title": ("str", 'ae_title = "SARCOSCOPE"'), "port": ("int", "port = 11112"),
    "bind": ("str", 'bind = "127.0.0.1"'),
    "allowed_calling_aets": ("strlist", 'allowed_calling_aets = ["ORTHANC"]'),
    "allowed_peers": ("strlist", 'allowed_peers = ["10.0.0.5"]'),
    "work_dir": ("path", 'work_dir = "/var/lib/sarcoscope"'), "audit_log": ("path", None),
    "send_back_to": ("str", 'send_back_to = "pacs"'), "quiet_period_s": ("number", "quiet_period_s = 10"),
    "max_attempts": ("int", "max_attempts = 6"), "retry_base_s": ("number", "retry_base_s = 5"),
    "retry_max_s": ("number", "retry_max_s = 600"), "keep_results": ("bool", "keep_results = true"),
    "tls": ("table", None),
}
_TLS_KEYS = {
    "ca_file": ("path", 'ca_file = "hospital-ca.pem"'), "cert_file": ("path", None),
    "key_file": ("path", None), "check_hostname": ("bool", "check_hostname = false"),
}
_AUTH_KEYS = {
    "type": ("str", 'type = "basic"'), "username": ("str", 'username = "sarcoscope"'),
    "secret_file": ("path", 'secret_file = "/etc/sarcoscope/pacs.password"'),
    "secret_env": ("str", 'secret_env = "SARCOSCOPE_PACS_PASSWORD"'),
}


def _check_fields(obj: object, schema: dict[str, tuple[str, str | None]], where: str) -> None:
    """Type-check the non-None fields of a settings object (also when built in code or by overrides)."""
    for key, (kind, example) in schema.items():
        if kind == "table" or not hasattr(obj, key):
            continue
        value = getattr(obj, key)
        if value is not None:
            check_type(value, kind, key, where, example)


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
        _check_fields(self, _TLS_KEYS, "TLS")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError(
                f"TLS: cert_file ({self.cert_file}) and key_file ({self.key_file}) must be given together"
            )
        for name in ("ca_file", "cert_file", "key_file"):
            p = getattr(self, name)
            if p is not None and not Path(p).is_file():
                raise ConfigError(f"TLS: {name} {p} does not exist; fix the path (tls {name} in the "
                                  "configuration, or the --tls-* option)")


AUTH_TYPES = ("basic", "bearer")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class WebAuth:
    """DICOMweb credentials: HTTP basic (``username`` + password) or a bearer token.

    The secret (password or token) is never part of the configuration, of this object, of its
    repr or of any message: it is read when a request is made, from ``secret_file`` (first line,
    surrounding whitespace dropped) or from the environment variable named by ``secret_env``.
    """

    type: str
    username: str | None = None
    secret_file: Path | None = None
    secret_env: str | None = None

    def __post_init__(self) -> None:
        _check_fields(self, _AUTH_KEYS, "auth")
        if self.type not in AUTH_TYPES:
            raise ConfigError(f"auth: type {self.type!r} is not one of {', '.join(AUTH_TYPES)}; "
                              'set type = "basic" (username + password) or type = "bearer" (token)')
        if self.type == "basic" and not self.username:
            raise ConfigError('auth: type = "basic" needs username = "..." (the password goes in secret_file '
                              "or secret_env)")
        if self.type == "bearer" and self.username:
            raise ConfigError('auth: type = "bearer" takes no username; remove it (the token goes in '
                              "secret_file or secret_env)")
        if (self.secret_file is None) == (self.secret_env is None):
            raise ConfigError(
                f"auth: give exactly one of secret_file (a file holding the {self.secret_name}) or secret_env "
                f"(the name of an environment variable holding it); the {self.secret_name} itself never goes "
                "into the configuration"
            )
        if self.secret_env is not None and not _ENV_NAME_RE.match(self.secret_env):
            # the value is not shown: it may be the secret itself, put there by mistake
            raise ConfigError("auth: secret_env is not an environment variable name (letters, digits, "
                              "underscore); give the name of the variable that holds the secret, not the secret")
        if self.secret_file is not None and not Path(self.secret_file).is_file():
            raise ConfigError(f"auth: secret_file {self.secret_file} does not exist; fix the path in the "
                              "configuration")

    @property
    def secret_name(self) -> str:
        return "password" if self.type == "basic" else "token"

    def describe(self) -> str:
        """Where the credentials come from (never the secret): for messages."""
        who = f"HTTP basic as user {self.username!r}" if self.type == "basic" else "bearer token"
        src = f"file {self.secret_file}" if self.secret_file is not None else f"${_env_name(self.secret_env)}"
        return f"{who}, {self.secret_name} from {src}"

    def secret(self, where: str = "auth") -> str:
        """Read the password or token now; ConfigError naming the file or variable when it cannot be."""
        if self.secret_file is not None:
            try:
                text = Path(self.secret_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{where}: secret_file {self.secret_file} cannot be read "
                                  f"({getattr(exc, 'strerror', None) or type(exc).__name__}); check the path "
                                  "and its permissions") from None
            value = text.strip().splitlines()[0].strip() if text.strip() else ""
            origin = f"secret_file {self.secret_file}"
        else:
            value = os.environ.get(str(self.secret_env), "").strip()
            origin = f"environment variable {_env_name(self.secret_env)} (secret_env)"
        if not value:
            raise ConfigError(f"{where}: {origin} is empty or not set; put the {self.secret_name} there "
                              "before running sarcoscope")
        return value


def _env_name(name: object) -> str:
    """An environment variable's name for messages: shown when it looks like one (PACS_TOKEN),
    masked otherwise — a password pasted into secret_env by mistake must not reach a log."""
    text = str(name)
    return text if re.fullmatch(r"[A-Z][A-Z0-9_]*", text) else f"{text[:2]}… (masked: not an UPPER_CASE name)"


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
    auth: WebAuth | None = None

    def __post_init__(self) -> None:
        _check_fields(self, _NODE_KEYS, f"node {self.name!r}")
        check_ae_title(self.ae_title, f"node {self.name!r} ae_title")
        if not self.host:
            raise ConfigError(f"node {self.name!r}: host is empty; set host = \"pacs.example.org\"")
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ConfigError(f"node {self.name!r}: port {self.port!r} must be an integer 1-65535")
        if self.dicomweb_url is not None and not re.match(r"^https?://", self.dicomweb_url):
            raise ConfigError(
                f"node {self.name!r}: dicomweb_url {redact_url(self.dicomweb_url)!r} must start with http:// "
                "or https://"
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
    #: node: keep each sent job's SEG/SR/key image in work_dir/results/<job>/ (they carry the
    #: patient module; the PACS has them once sent, so by default they are deleted then)
    keep_results: bool = False
    tls: TlsSettings | None = None

    def __post_init__(self) -> None:
        _check_fields(self, _LOCAL_KEYS, "local")
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


def _check_table(raw: dict[str, Any], schema: dict[str, tuple[str, str | None]], where: str) -> None:
    """Unknown keys and wrong types in one TOML table, named with the file and table."""
    unknown = set(raw) - set(schema)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(schema)}")
    for key, value in raw.items():
        kind, example = schema[key]
        if kind == "table" and not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a table ([...{key}] with its own keys), got "
                              f"{_type_name(value)}{_shown(value, key, where)}")
        check_type(value, kind, key, where, example)


def _path(value: str | None, base: Path) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _sub(raw: Any, cls: type, schema: dict, where: str, base: Path, paths: tuple[str, ...]) -> Any:
    """A sub-table ([....tls], [....auth]) checked and built; ConfigError messages get ``where``."""
    if raw is None:
        return None
    _check_table(raw, schema, where)
    kwargs = {k: (_path(v, base) if k in paths else v) for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {_strip_prefix(str(exc))}") from None


def _strip_prefix(message: str) -> str:
    for prefix in ("TLS: ", "auth: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _tls(raw: Any, where: str, base: Path) -> TlsSettings | None:
    return _sub(raw, TlsSettings, _TLS_KEYS, f"{where} tls", base, ("ca_file", "cert_file", "key_file"))


def _auth(raw: Any, where: str, base: Path) -> WebAuth | None:
    if raw is not None and "type" not in raw:
        raise ConfigError(f'{where} auth: type is missing; set type = "basic" or type = "bearer"')
    return _sub(raw, WebAuth, _AUTH_KEYS, f"{where} auth", base, ("secret_file",))


def _build(cls: type, raw: dict[str, Any], where: str, extra: dict[str, Any]) -> Any:
    kwargs = {k: v for k, v in raw.items() if k not in ("tls", "auth")}
    kwargs.update(extra)
    schema = _NODE_KEYS if cls is PacsNode else _LOCAL_KEYS
    missing = [f.name for f in fields(cls) if f.name not in kwargs and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        examples = "; ".join(str(schema[m][1]) for m in missing if m in schema)
        raise ConfigError(f"{where}: missing {', '.join(missing)}; add {examples}")
    return cls(**kwargs)


def parse_config(data: dict[str, Any], path: Path | None = None) -> PacsConfig:
    """Build a PacsConfig from the parsed TOML table (``path`` resolves relative files).

    Every key's type is checked first (ConfigError naming the file, table, key, the expected type
    and the type found), so nothing is silently converted.
    """
    base = path.parent if path else Path.cwd()
    where = str(path) if path else "configuration"
    for key in ("local", "nodes"):
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(
                f"{where}: {key} must be a table ([{key}{'' if key == 'local' else '.NAME'}] with its keys), got "
                f"{_type_name(data[key])} {redact_url(repr(data[key]))[:80]}; see docs/pacs.md"
            )
    raw_local = dict(data.get("local", {}))
    w_local = f"{where} [local]"
    _check_table(raw_local, _LOCAL_KEYS, w_local)
    for key in ("allowed_calling_aets", "allowed_peers"):
        if key in raw_local:
            raw_local[key] = tuple(raw_local[key])
    for key in ("work_dir", "audit_log"):
        if key in raw_local:
            raw_local[key] = _path(raw_local[key], base)
    local = _build(LocalNode, raw_local, w_local, {"tls": _tls(raw_local.get("tls"), w_local, base)})
    nodes: dict[str, PacsNode] = {}
    raw_nodes = data.get("nodes", {})
    for name, raw in raw_nodes.items():
        w = f"{where} [nodes.{name}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{w} must be a table, got {_type_name(raw)}; write [nodes.{name}] with its keys")
        _check_table(raw, _NODE_KEYS, w)
        nodes[name] = _build(PacsNode, raw, w, {"name": name, "tls": _tls(raw.get("tls"), w, base),
                                                "auth": _auth(raw.get("auth"), w, base)})
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
