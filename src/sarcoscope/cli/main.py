"""The ``sarcoscope`` command: builds the typer app, configures logging, maps errors to exit codes.

This is the only place that configures logging and decides the process exit status. Command
modules (``sarcoscope.cli.analyze``, ``.pacs``, ``.train``) each expose ``register(app)``; a
module that is absent from this installation is simply not registered. Command functions raise
``SarcoscopeError`` subclasses; ``main`` turns them into one clear paragraph and the documented
exit code (``errors.EXIT_CODES``), with a traceback only for internal errors and only with ``-v``.
Heavy imports live inside the command functions so that ``sarcoscope --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from sarcoscope import __version__
from sarcoscope.errors import (
    EXIT_CODES,
    ConfigError,
    ExportError,
    GeometryError,
    InputError,
    L3NotFound,
    ModelError,
    PacsError,
    SarcoscopeError,
)

COMMAND_MODULES: tuple[str, ...] = ("analyze", "pacs", "train")
INTERNAL_ERROR = 70

_EXIT_TEXT = "\n".join(f"  {code:>3}  {what}" for what, code in EXIT_CODES.items())

app = typer.Typer(
    name="sarcoscope",
    help=(
        "Body composition (skeletal muscle, IMAT, VAT, SAT) on the L3 CT slice.\n\n"
        "Exit codes:\n\n\b\n" + _EXIT_TEXT
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state: dict[str, Any] = {"verbose": 0, "registered": False, "unavailable": {}}


def stdout() -> Console:
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


#: Environment variable that lets ``-vvv`` show the DICOM identifiers pynetdicom dumps (patient
#: ID, accession number, names) — for debugging with a PACS vendor, never in routine logs.
LOG_IDENTIFIERS_ENV = "SARCOSCOPE_LOG_IDENTIFIERS"

# One element of a dataset as pynetdicom logs it: "(0010,0020) LO [value]  # 1 PatientID".
_ELEMENT_LINE = re.compile(r"^(\s*\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\) [A-Z]{2} )(.*?)(\s+# .*)?$", re.DOTALL)


class _DatasetValueFilter(logging.Filter):
    """Mask the values in pynetdicom's dataset dumps (request/response identifiers logged at INFO
    and DEBUG: patient ID, accession, names …); tag and keyword stay, so the dump is still useful."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pynetdicom"):
            m = _ELEMENT_LINE.match(record.getMessage())
            if m:
                record.msg = f"{m.group(1)}[value hidden]{m.group(3) or ''}"
                record.args = ()
        return True


def log_identifiers_opt_in() -> bool:
    """Whether the user asked (``SARCOSCOPE_LOG_IDENTIFIERS=1``) for identifiers in -vvv logs."""
    return os.environ.get(LOG_IDENTIFIERS_ENV, "").strip().lower() in ("1", "yes", "true")


def configure_logging(verbose: int) -> None:
    """Rich log handler on stderr: warnings by default, -v info, -vv debug, -vvv third-party debug.

    -vvv adds pydicom's and pynetdicom's own debug output (PDUs, DIMSE messages). The identifier
    datasets pynetdicom dumps there are masked, and its request/response identifier logging is
    off, unless ``SARCOSCOPE_LOG_IDENTIFIERS=1`` is set (then a warning says so on stderr).
    """
    from rich.logging import RichHandler

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_sarcoscope", False):
            root.removeHandler(handler)
    handler = RichHandler(
        console=stderr(), show_time=verbose > 1, show_path=verbose > 1, markup=False,
        rich_tracebacks=False,
    )
    handler._sarcoscope = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(message)s"))
    show_identifiers = verbose > 2 and log_identifiers_opt_in()
    if not show_identifiers:
        handler.addFilter(_DatasetValueFilter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("sarcoscope").setLevel(level)
    # Third-party chatter only when asked for debugging.
    for name in ("pydicom", "pynetdicom", "PIL", "matplotlib"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)
    if verbose > 2:  # below -vvv pynetdicom logs warnings only; importing it would slow every command
        try:
            from pynetdicom import _config as pynetdicom_config

            pynetdicom_config.LOG_REQUEST_IDENTIFIERS = show_identifiers
            pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = show_identifiers
        except ImportError:  # the pacs part is not installed
            pass
    if show_identifiers:
        stderr().print(
            f"warning: -vvv with {LOG_IDENTIFIERS_ENV}=1 logs DICOM identifiers (patient IDs, names, accession "
            "numbers) to stderr; do not keep or share this output", markup=False,
        )


def _print_version(value: bool) -> None:
    if value:
        stdout().print(f"sarcoscope {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True,
        help="More log output (-v info, -vv debug, -vvv library debug with DICOM identifiers masked); "
        "tracebacks for internal errors.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    _state["verbose"] = verbose
    configure_logging(verbose)


@app.command("info")
def info_command() -> None:
    """Versions, available pixel decoders, the model card and the reference cut-offs."""
    from sarcoscope.cli.analyze import print_info

    print_info(stdout(), unavailable=dict(_state["unavailable"]))


def register_commands(target: typer.Typer | None = None,
                      names: tuple[str, ...] = COMMAND_MODULES) -> dict[str, str]:
    """Add every command module present in this installation; return those that failed.

    A module that does not exist is skipped silently (that part is not installed); one that
    exists but cannot be imported (a missing dependency) is skipped and reported by
    ``sarcoscope info``.
    """
    if target is None:
        if _state["registered"]:
            return dict(_state["unavailable"])
        _state["registered"] = True
        target = app
    unavailable: dict[str, str] = {}
    for name in names:
        modname = f"sarcoscope.cli.{name}"
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue
            unavailable[name] = f"{type(exc).__name__}: {exc}"
            continue
        except ImportError as exc:
            unavailable[name] = f"{type(exc).__name__}: {exc}"
            continue
        register = getattr(module, "register", None)
        if register is None:
            unavailable[name] = f"{modname} has no register(app)"
            continue
        register(target)
    if target is app:
        _state["unavailable"].update(unavailable)
    return unavailable


_KIND = {
    GeometryError: "bad geometry",
    ConfigError: "bad option",
    InputError: "bad input",
    L3NotFound: "L3 not found",
    ModelError: "model problem",
    ExportError: "cannot write results",
    PacsError: "PACS error",
}


def _kind(exc: SarcoscopeError) -> str:
    for cls in type(exc).__mro__:
        if cls in _KIND:
            return _KIND[cls]
    return "error"


def report_error(exc: SarcoscopeError) -> int:
    """Print one paragraph for a user-facing error; return its exit code."""
    code = int(getattr(exc, "exit_code", INTERNAL_ERROR))
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, L3NotFound) and exc.coverage and exc.coverage not in message:
        message += f" The scan covers {exc.coverage}."
    text = Text()
    text.append(f"error ({_kind(exc)}, exit {code}): ", style="bold red")
    text.append(message)
    stderr().print(text, soft_wrap=True)  # no hard line breaks inside paths
    if _state["verbose"] >= 2:
        stderr().print_exception()
    return code


def report_internal(exc: BaseException) -> int:
    text = Text()
    text.append(f"internal error (exit {INTERNAL_ERROR}): ", style="bold red")
    text.append(
        f"{type(exc).__name__}: {exc}. This is a bug in sarcoscope, not a problem with your "
        "data or options; rerun with -v to see the traceback and please report it."
    )
    err = stderr()
    err.print(text, soft_wrap=True)
    if _state["verbose"] >= 1:
        err.print_exception(show_locals=False)
    return INTERNAL_ERROR


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit status."""
    register_commands()
    args = list(sys.argv[1:] if argv is None else argv)
    # -v is read by the callback; pre-scan so that errors raised while parsing also honour it.
    _state["verbose"] = sum(
        a.count("v") for a in args if a.startswith("-") and set(a[1:]) == {"v"}
    ) + args.count("--verbose")
    try:
        rv = app(args=args, prog_name="sarcoscope", standalone_mode=False)
    except SarcoscopeError as exc:
        return report_error(exc)
    except typer.TyperException as exc:  # usage errors: unknown option, bad value
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            stderr().print(f"error: {exc}", markup=False)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        stderr().print("aborted")
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the last line of defence, by design
        return report_internal(exc)
    return int(rv) if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
