"""Review fixes on the PACS side, all offline (loopback servers in threads, no DNS, no real PACS):
DICOMweb credentials and their redaction, strict configuration types, clear errors (exit 2 or 6,
never 70) for unresolvable hosts, unusable TLS files and unwritable folders, study-not-found and
malformed UIDs, and no DICOM identifiers in -vvv logs unless explicitly asked for."""

from __future__ import annotations

import base64
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sarcoscope.errors import ConfigError, PacsError
from sarcoscope.pacs.config import LocalNode, PacsNode, TlsSettings, WebAuth, load_config, redact_url


def _cfg(tmp_path: Path, text: str, local: str = "") -> Path:
    cfg = tmp_path / "sarcoscope.toml"
    cfg.write_text(f'[local]\nwork_dir = "{tmp_path / "w"}"\n{local}' + text)
    return cfg


# -- 3. configuration types -------------------------------------------------------------------
NODE = '[nodes.pacs]\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = 104\n'


@pytest.mark.parametrize(
    "text, message",
    [
        ('[local]\nallowed_peers = "127.0.0.1"\n',
         r"\[local\]: allowed_peers must be a list of strings \(e\.g\. allowed_peers = \[\"10\.0\.0\.5\"\]\), "
         r"got a string '127\.0\.0\.1'"),
        ('[local]\nallowed_calling_aets = "STORESCU"\n',
         r"allowed_calling_aets must be a list of strings .*got a string 'STORESCU'"),
        ('[local]\nallowed_peers = ["127.0.0.1", 5]\n', r"allowed_peers must be a list of strings .*got a list holding an integer"),
        (NODE + '[nodes.pacs.tls]\ncheck_hostname = "no"\n',
         r"\[nodes\.pacs\] tls: check_hostname must be true or false .*got a string 'no'"),
        (NODE.replace("port = 104", 'port = 104\ntimeout_s = "30"'), r"timeout_s must be a number .*got a string '30'"),
        (NODE.replace('"127.0.0.1"', "127"), r"\[nodes\.pacs\]: host must be a string .*got an integer 127"),
        (NODE.replace("104", '"104"'), r"port must be an integer .*got a string '104'"),
        (NODE.replace("104", "104.0"), r"port must be an integer .*got a float 104\.0"),
        (NODE.replace("104", "true"), r"port must be an integer .*got a boolean True"),
        ('[local]\nwork_dir = 5\n', r"\[local\]: work_dir must be a path string .*got an integer 5"),
        (NODE + '[nodes.pacs.tls]\nca_file = 5\n', r"tls: ca_file must be a path string .*got an integer 5"),
        ('local = "x"\n', r"local must be a table \(\[local\] with its keys\), got a string 'x'"),
        ('nodes = "pacs"\n', r"nodes must be a table \(\[nodes\.NAME\] with its keys\), got a string 'pacs'"),
        ('[nodes.pacs]\nae_title = "ORTHANC"\nport = 104\n', r"\[nodes\.pacs\]: missing host; add host = "),
        (NODE + 'tls = "yes"\n', r"tls must be a table"),
    ],
)
def test_config_types_checked_with_key_and_types(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "sarcoscope.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(cfg)
    assert str(cfg) in str(info.value)  # names the file


def test_lists_stay_lists_and_objects_check_types_too(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[local]\nallowed_peers = ["127.0.0.1"]\nallowed_calling_aets = ["STORESCU"]\n'
                   + NODE + "timeout_s = 30\n[nodes.pacs.tls]\ncheck_hostname = false\n")
    c = load_config(cfg)
    assert c.local.allowed_peers == ("127.0.0.1",) and c.local.allowed_calling_aets == ("STORESCU",)
    assert c.node("pacs").tls.check_hostname is False and c.node("pacs").timeout_s == 30
    # built in code (or by command-line overrides) the same checks apply
    with pytest.raises(ConfigError, match=r"local: allowed_peers must be a list of strings .*got a string"):
        LocalNode(allowed_peers="127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"node 'p': timeout_s must be a number .*got a string '30'"):
        PacsNode("p", "A", "h", 1, timeout_s="30")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"TLS: check_hostname must be true or false"):
        TlsSettings(check_hostname="no")  # type: ignore[arg-type]


# -- 1. DICOMweb credentials and redaction ------------------------------------------------------
def test_redact_url_hides_credentials_and_identifiers() -> None:
    assert redact_url("https://user:s3cret@pacs.example.org/dicom-web") == "https://***@pacs.example.org/dicom-web"
    text = redact_url("GET http://u:p%40ss@h:80/dw/studies?PatientID=SECRET&limit=1&access_token=TOK failed")
    assert text == "GET http://***@h:80/dw/studies?PatientID=***&limit=1&access_token=*** failed"
    assert redact_url("https://pacs.example.org/dicom-web") == "https://pacs.example.org/dicom-web"
    assert redact_url(None) == ""


class _FakeDicomWeb(BaseHTTPRequestHandler):
    """QIDO-RS answering [] when the Authorization header is the expected one, 401/403 otherwise."""

    expected: str | None = None
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        auth = self.headers.get("Authorization")
        type(self).seen.append(auth)
        if auth == "Bearer forbidden-token":
            code, body = 403, b""
        elif self.expected is None or auth == self.expected:
            code, body = 200, b"[]"
        else:
            code, body = 401, b""
        self.send_response(code)
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="pacs"')
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def dicomweb():
    _FakeDicomWeb.seen = []
    _FakeDicomWeb.expected = None
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeDicomWeb)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield _FakeDicomWeb, f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()


def test_dicomweb_basic_and_bearer_credentials(tmp_path: Path, dicomweb, monkeypatch) -> None:
    from sarcoscope.pacs.dimse import StudyQuery
    from sarcoscope.pacs.web import qido_studies

    handler, url = dicomweb
    (tmp_path / "pw").write_text("s3cret-pw\n")
    q = StudyQuery(accession="A1")
    handler.expected = "Basic " + base64.b64encode(b"sarco:s3cret-pw").decode()

    anonymous = PacsNode("web", "W", "127.0.0.1", 1, dicomweb_url=url, timeout_s=5)
    with pytest.raises(PacsError, match=r"HTTP 401 \(the server wants credentials and none are configured: set "
                                        r"\[nodes\.web\.auth\] with type = \"basic\", username and secret_file") as e:
        qido_studies(anonymous, q)
    assert e.value.http_status == 401

    basic = PacsNode("web", "W", "127.0.0.1", 1, dicomweb_url=url, timeout_s=5,
                     auth=WebAuth("basic", username="sarco", secret_file=tmp_path / "pw"))
    assert qido_studies(basic, q) == [] and handler.seen[-1] == handler.expected
    assert "s3cret" not in repr(basic)  # the object never holds the secret

    monkeypatch.setenv("PACS_TOKEN", "tok-123")
    bearer = PacsNode("web", "W", "127.0.0.1", 1, dicomweb_url=url, timeout_s=5,
                      auth=WebAuth("bearer", secret_env="PACS_TOKEN"))
    handler.expected = "Bearer tok-123"
    assert qido_studies(bearer, q) == [] and handler.seen[-1] == "Bearer tok-123"

    handler.expected = "Bearer another"
    with pytest.raises(PacsError, match=r"HTTP 401 \(the server did not accept our credentials \(bearer token, "
                                        r"token from \$PACS_TOKEN\); check \[nodes\.web\.auth\]") as e:
        qido_studies(bearer, q)
    assert "tok-123" not in str(e.value)
    monkeypatch.setenv("PACS_TOKEN", "forbidden-token")
    with pytest.raises(PacsError, match=r"HTTP 403 \(forbidden: the account of \[nodes\.web\.auth\]"):
        qido_studies(bearer, q)

    monkeypatch.delenv("PACS_TOKEN")
    with pytest.raises(ConfigError, match=r"\[nodes\.web\.auth\]: environment variable PACS_TOKEN \(secret_env\) "
                                          r"is empty or not set"):
        qido_studies(bearer, q)


def test_credentials_in_url_never_shown(tmp_path: Path, dicomweb, capsys) -> None:
    from sarcoscope.cli.main import main

    handler, url = dicomweb
    handler.expected = "Basic " + base64.b64encode(b"u:right").decode()
    leaky = url.replace("http://", "http://u:hunter2@")
    cfg = _cfg(tmp_path, f'[nodes.web]\nae_title = "W"\nhost = "127.0.0.1"\nport = 1\ndicomweb_url = "{leaky}"\n')
    assert main(["pacs", "find", "web", "--config", str(cfg), "--web", "--accession", "A1"]) == 6
    err = " ".join(capsys.readouterr().err.split())  # the log handler wraps lines
    assert "hunter2" not in err and "http://***@127.0.0.1" in err
    assert "did not accept the user:password given in dicomweb_url" in err and "[nodes.web.auth]" in err
    assert "carries credentials" in err  # the warning says to move them
    assert not any("hunter2" in f.read_text() for f in (tmp_path / "w").rglob("*") if f.is_file())


def test_dicomweb_credentials_from_the_configuration(tmp_path: Path, dicomweb, capsys) -> None:
    from sarcoscope.cli.main import main

    handler, url = dicomweb
    handler.expected = "Basic " + base64.b64encode(b"sarco:pw-from-file").decode()
    (tmp_path / "pacs.password").write_text("pw-from-file\n")
    node = f'[nodes.web]\nae_title = "W"\nhost = "127.0.0.1"\nport = 1\ndicomweb_url = "{url}"\n'
    cfg = _cfg(tmp_path, node + '[nodes.web.auth]\ntype = "basic"\nusername = "sarco"\nsecret_file = "pacs.password"\n')
    assert main(["pacs", "find", "web", "--config", str(cfg), "--web", "--accession", "A1"]) == 0
    assert handler.seen[-1] == handler.expected
    assert "pw-from-file" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "auth, message",
    [
        ('username = "u"\nsecret_env = "X"\n', r"auth: type is missing; set type = \"basic\" or type = \"bearer\""),
        ('type = "digest"\nsecret_env = "X"\n', r"auth: type 'digest' is not one of basic, bearer"),
        ('type = "basic"\nsecret_env = "X"\n', r"auth: type = \"basic\" needs username"),
        ('type = "bearer"\n', r"auth: give exactly one of secret_file .* or secret_env"),
        ('type = "bearer"\nsecret_env = "X"\nsecret_file = "f"\n', r"auth: give exactly one of secret_file"),
        ('type = "basic"\nusername = "u"\npassword = "inline"\n', r"auth: unknown keys \['password'\]"),
        ('type = "bearer"\nsecret_env = "tok en"\n', r"auth: secret_env is not an environment variable name \(letters"),
        ('type = "bearer"\nsecret_file = "missing.txt"\n', r"auth: secret_file .*missing\.txt does not exist"),
    ],
)
def test_auth_configuration_errors(tmp_path: Path, auth: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(NODE + "[nodes.pacs.auth]\n" + auth)
    with pytest.raises(ConfigError, match=r"\[nodes\.pacs\] " + message):
        load_config(cfg)


def test_a_secret_typed_into_the_wrong_place_is_never_echoed(tmp_path: Path, monkeypatch) -> None:
    from sarcoscope.pacs.config import WebAuth

    for text in ('auth = "radiology:Hunter2-secret"\n',
                 '[nodes.pacs.auth]\ntype = "bearer"\nsecret_file = ["Hunter2-secret"]\n'):
        cfg = tmp_path / "c.toml"
        cfg.write_text(NODE + text)
        with pytest.raises(ConfigError) as info:
            load_config(cfg)
        assert "Hunter2" not in str(info.value)
    # a password pasted as the variable's name is masked where the name is shown
    monkeypatch.delenv("Hunter2secret", raising=False)
    auth = WebAuth(type="bearer", secret_env="Hunter2secret")
    with pytest.raises(ConfigError) as info:
        auth.secret()
    assert "Hunter2secret" not in str(info.value) and "Hunter2secret" not in auth.describe()


# -- 2. no internal errors: hosts, TLS files, folders -------------------------------------------
def test_unresolvable_host_is_a_pacs_error(tmp_path: Path, capsys, monkeypatch) -> None:
    from sarcoscope.cli.main import main

    real = socket.getaddrinfo

    def fake_getaddrinfo(host, *args, **kwargs):  # no DNS traffic from tests
        if host == "pacs.typo.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    cfg = _cfg(tmp_path, NODE)
    for cmd in (["echo"], ["find", "--accession", "A1"], ["analyze", "--accession", "A1"]):
        args = ["pacs", cmd[0], "pacs", *cmd[1:], "--config", str(cfg), "--host", "pacs.typo.invalid"]
        assert main(args) == 6, cmd
        assert ("cannot resolve host 'pacs.typo.invalid' of node 'pacs' (Name or service not known); check "
                "[nodes.pacs] host or --host") in capsys.readouterr().err


def test_unusable_tls_files_are_configuration_errors(tmp_path: Path, capsys) -> None:
    from sarcoscope.cli.main import main
    from tests.unit.test_pacs import _make_certs

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, cert_a, _ = _make_certs(tmp_path / "a")
    _, _, key_b = _make_certs(tmp_path / "b")
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n")
    cfg = _cfg(tmp_path, NODE, local='send_back_to = "pacs"\n')
    base = ["pacs", "echo", "pacs", "--config", str(cfg)]

    assert main(base + ["--tls-ca", str(junk)]) == 2
    assert (f"node 'pacs' TLS ([nodes.pacs.tls] or the --tls-* options): ca_file {junk} cannot be used as a CA "
            "certificate") in capsys.readouterr().err
    assert main(base + ["--tls-cert", str(cert_a), "--tls-key", str(key_b)]) == 2
    assert (f"cert_file {cert_a} and key_file {key_b} cannot be loaded: the key does not belong to the "
            "certificate") in capsys.readouterr().err
    assert main(["node", "--config", str(cfg), "--tls-cert", str(junk), "--tls-key", str(key_b)]) == 2
    assert (f"TLS of our receiver ([local.tls] / --tls-*): cert_file {junk} and key_file {key_b} cannot be "
            "loaded: not a usable PEM file") in capsys.readouterr().err


def test_unwritable_work_dir_is_a_configuration_error(tmp_path: Path, capsys) -> None:
    from sarcoscope.cli.main import main

    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "work"  # cannot be created: its parent is a file
    cfg = _cfg(tmp_path, NODE, local='send_back_to = "pacs"\n')
    assert main(["pacs", "analyze", "pacs", "--config", str(cfg), "--study", "1.2.3", "--work-dir", str(bad)]) == 2
    assert f"work_dir {bad} cannot be created (Not a directory); set [local] work_dir or --work-dir" in \
        capsys.readouterr().err
    assert main(["node", "--config", str(cfg), "--work-dir", str(bad)]) == 2
    assert f"work_dir {bad} cannot be created" in capsys.readouterr().err


# -- 4. unknown study, malformed UID -------------------------------------------------------------
def test_unknown_study_says_not_found(tmp_path: Path, dicomweb, capsys) -> None:
    from sarcoscope.cli.main import main

    _, url = dicomweb  # answers [] to every search: the PACS knows no series of that study
    cfg = _cfg(tmp_path, f'[nodes.web]\nae_title = "W"\nhost = "127.0.0.1"\nport = 1\ndicomweb_url = "{url}"\n')
    assert main(["pacs", "analyze", "web", "--config", str(cfg), "--study", "1.2.3.4.5.6", "--via", "wado"]) == 6
    err = capsys.readouterr().err
    assert f"study 1.2.3.4.5.6 not found on {url}" in err and "no series at all" not in err
    assert main(["pacs", "analyze", "web", "--config", str(cfg), "--study", "../../etc"]) == 2
    assert "--study '../../etc' is not a DICOM UID" in capsys.readouterr().err


# -- 5. no identifiers in -vvv logs ----------------------------------------------------------------
@pytest.fixture()
def find_scp():
    """A pynetdicom C-FIND SCP on loopback answering one study with a patient ID and accession."""
    from pydicom import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    def on_find(event):
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientID = "SECRETPID-777"
        ds.AccessionNumber = "ACC-SECRET-9"
        ds.StudyInstanceUID = "1.2.3.4"
        ds.StudyDate = "20240101"
        yield 0xFF00, ds

    ae = AE(ae_title="FINDSCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    try:
        yield server.socket.getsockname()[1]
    finally:
        server.shutdown()
        from sarcoscope.cli.main import configure_logging

        configure_logging(0)


def test_vvv_masks_identifiers_unless_asked(tmp_path: Path, find_scp, capsys, monkeypatch) -> None:
    from sarcoscope.cli.main import main

    cfg = _cfg(tmp_path, f'[nodes.f]\nae_title = "FINDSCP"\nhost = "127.0.0.1"\nport = {find_scp}\n')
    args = ["-vvv", "pacs", "find", "f", "--config", str(cfg), "--accession", "ACC-SECRET-9"]
    monkeypatch.delenv("SARCOSCOPE_LOG_IDENTIFIERS", raising=False)
    assert main(args) == 0
    out = capsys.readouterr()
    assert "SECRETPID-777" in out.out  # the command's own answer (stdout) still lists it
    assert "DEBUG" in out.err and "C-FIND RSP" in out.err  # library debug is on ...
    assert "SECRETPID-777" not in out.err and "ACC-SECRET-9" not in out.err  # ... without identifiers
    # dataset dumps pynetdicom logs unconditionally (e.g. as an SCP) are masked by the handler
    import logging

    logging.getLogger("pynetdicom.service_class").info("(0010,0020) LO [SECRETPID-777]  # 1 PatientID")
    err = " ".join(capsys.readouterr().err.split())  # the log handler wraps lines
    assert "(0010,0020) LO [value" in err and "hidden]" in err and "SECRETPID" not in err

    monkeypatch.setenv("SARCOSCOPE_LOG_IDENTIFIERS", "1")  # the documented opt-in
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "logs DICOM identifiers" in err and "SECRETPID-777" in err
