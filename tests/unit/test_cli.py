"""The CLI shell: exit codes, one-paragraph messages, all-or-nothing outputs, --json, info."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sarcoscope import __version__, errors, pipeline
from sarcoscope.cli.main import main
from sarcoscope.settings import AnalysisSettings
from tests.e2e._fakes import LookupSegmenter, make_volume


_REAL_ANALYZE = pipeline.analyze


def _fake_result(slices="2"):
    vol, _ = make_volume(5)
    return _REAL_ANALYZE(vol, AnalysisSettings(slices=slices), segmenter=LookupSegmenter())


@pytest.fixture
def fake_analyze(monkeypatch):
    calls = []

    def fake(source, settings=None, **kw):
        calls.append((source, settings))
        return _fake_result(settings.slices or "2")

    monkeypatch.setattr(pipeline, "analyze", fake)
    return calls


@pytest.mark.parametrize(
    "exc, code, kind",
    [
        (errors.InputError("scan.dcm: not CT (modality MR); give a CT series"), 2, "bad input"),
        (errors.GeometryError("gantry tilt 12°"), 2, "bad geometry"),
        (errors.L3NotFound("L3 is not in the scan.", coverage="T10 to L1"), 3, "L3 not found"),
        (errors.ModelError("model.onnx damaged"), 4, "model problem"),
        (errors.ExportError("disk full"), 5, "cannot write results"),
        (errors.PacsError("association rejected", status=0xA700), 6, "PACS error"),
    ],
)
def test_each_error_class_maps_to_its_exit_code(monkeypatch, tmp_path, capsys, exc, code, kind):
    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(pipeline, "analyze", boom)
    out = tmp_path / "out"
    rc = main(["analyze", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == code
    assert f"error ({kind}, exit {code}):" in err
    assert str(exc) in " ".join(err.split())
    assert "Traceback" not in err
    assert not out.exists()
    if isinstance(exc, errors.L3NotFound):
        assert "The scan covers T10 to L1." in " ".join(err.split())


def test_exit_codes_match_the_documented_table():
    assert errors.EXIT_CODES["success"] == 0
    documented = set(errors.EXIT_CODES.values())
    for cls in (errors.InputError, errors.GeometryError, errors.ConfigError, errors.L3NotFound,
                errors.ModelError, errors.ExportError, errors.PacsError, errors.SarcoscopeError):
        assert cls.exit_code in documented


def test_internal_error_exit_70_traceback_only_with_v(monkeypatch, tmp_path, capsys):
    def bug(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(pipeline, "analyze", bug)
    assert main(["analyze", str(tmp_path)]) == 70
    err = capsys.readouterr().err
    assert "internal error (exit 70): ZeroDivisionError: division by zero" in err
    assert "Traceback" not in err
    assert main(["-v", "analyze", str(tmp_path)]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err


def test_usage_errors_exit_2(capsys, tmp_path):
    assert main(["analyze", str(tmp_path), "--no-such-option"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path), "--slices", "1-3"]) == 2
    assert "is not a valid slice specification" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path), "--sex", "X"]) == 2


def test_analyze_writes_all_outputs_and_prints_the_table(fake_analyze, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    labels = tmp_path / "labels.nii.gz"
    table = tmp_path / "rows.csv"
    rc = main(["analyze", str(tmp_path), "--out", str(out), "--labels", str(labels),
               "--csv", str(table), "--slices", "2", "--height-cm", "170"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["overlay.png", "result.json"]
    assert labels.is_file() and table.is_file()
    assert not [p for p in tmp_path.rglob(".sarcoscope-*")]  # staging folders removed
    text = " ".join(captured.out.split())
    assert "Skeletal muscle" in text and "SAT" in text and "mean HU" in text
    assert "reference: Martin 2013" in text
    assert f"wrote {out / 'result.json'}" in text and f"wrote {labels}" in text
    settings = fake_analyze[0][1]
    assert settings.height_cm == 170 and settings.labels_path == labels
    doc = json.loads((out / "result.json").read_text())
    assert doc["timings_s"]["write"] > 0


def test_failure_while_writing_leaves_no_result_files(fake_analyze, monkeypatch, tmp_path, capsys):
    import sarcoscope.export.labels_nifti as ln

    def fail(*a, **k):
        raise errors.ExportError("labels.nii.gz: disk full")

    monkeypatch.setattr(ln, "write_labels_nifti", fail)
    out = tmp_path / "out"
    table = tmp_path / "rows.csv"
    table.write_text("")  # an existing (empty) file must stay as it was
    rc = main(["analyze", str(tmp_path), "--out", str(out), "--labels",
               str(tmp_path / "labels.nii.gz"), "--csv", str(table)])
    assert rc == 5
    assert "disk full" in capsys.readouterr().err
    assert not out.exists()
    assert not (tmp_path / "labels.nii.gz").exists()
    assert table.read_text() == ""
    assert not [p for p in tmp_path.rglob(".sarcoscope-*")]


def test_out_that_is_a_file_is_refused(fake_analyze, tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("x")
    assert main(["analyze", str(tmp_path), "--out", str(f)]) == 5
    assert "exists and is not a folder" in capsys.readouterr().err


def test_json_flag_prints_only_json_on_stdout(fake_analyze, tmp_path, capsys):
    assert main(["analyze", str(tmp_path), "--json", "--slices", "1,2"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["schema"] == "sarcoscope.result/1"
    assert [s["index"] for s in doc["slices"]] == [1, 2]


def test_info_lists_versions_decoders_model_and_references(capsys):
    assert main(["info"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"sarcoscope {__version__}" in out and "pydicom" in out and "onnxruntime" in out
    assert "JPEG 2000" in out and "JPEG Lossless" in out and "pylibjpeg" in out
    assert "segmentation model" in out
    for key in ("prado2008", "martin2013", "derstine2018", "vanderwerf2018"):
        assert key in out


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert f"sarcoscope {__version__}" in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Exit codes" in out and "L3 not found" in out and "analyze" in out


def test_register_commands_skips_absent_modules_and_reports_broken_ones(monkeypatch):
    import sys
    import types

    import typer

    from sarcoscope.cli.main import register_commands

    broken = types.ModuleType("sarcoscope.cli.brokenpart")  # exists, but has no register()
    monkeypatch.setitem(sys.modules, "sarcoscope.cli.brokenpart", broken)
    target = typer.Typer()
    failed = register_commands(target, ("analyze", "doesnotexist", "brokenpart"))
    assert failed == {"brokenpart": "sarcoscope.cli.brokenpart has no register(app)"}
    names = {c.name for c in target.registered_commands}
    assert {"analyze", "demo"} <= names


def test_an_output_path_that_is_the_input_is_refused_before_analysing(fake_analyze, tmp_path, capsys):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"the user's only copy")
    for option in ("--labels", "--csv"):
        rc = main(["analyze", str(scan), option, str(scan)])
        err = " ".join(capsys.readouterr().err.split())
        assert rc == 5
        assert f"{option} {scan} is the input file: writing it would replace the scan" in err
    assert scan.read_bytes() == b"the user's only copy"
    assert fake_analyze == []  # refused before any work


def test_a_rerun_without_spine_picture_removes_the_earlier_one(fake_analyze, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path), "--out", str(out), "--slices", "2"]) == 0
    (out / "spine.png").write_bytes(b"as an earlier automatic run left it")
    (out / "notes.txt").write_text("the user's")
    assert main(["analyze", str(tmp_path), "--out", str(out), "--slices", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "overlay.png", "result.json"]


def test_a_spine_png_beside_no_result_of_ours_is_left_alone(fake_analyze, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "spine.png").write_bytes(b"the user's own picture")
    assert main(["analyze", str(tmp_path), "--out", str(out), "--slices", "2"]) == 0
    assert (out / "spine.png").read_bytes() == b"the user's own picture"


def test_a_failed_move_puts_the_earlier_csv_and_results_back(fake_analyze, monkeypatch, tmp_path, capsys):
    import sarcoscope.cli.analyze as cli_analyze

    out, table = tmp_path / "out", tmp_path / "rows.csv"
    assert main(["analyze", str(tmp_path), "--out", str(out), "--csv", str(table), "--slices", "2"]) == 0
    before = {p.name: p.read_bytes() for p in (table, out / "result.json", out / "overlay.png")}
    real_replace = cli_analyze.os.replace

    def failing(src, dst):
        if Path(src).name == "rows.csv" and ".sarcoscope-" in str(src):
            raise PermissionError(13, "Permission denied", str(dst))  # e.g. open in a spreadsheet
        return real_replace(src, dst)

    monkeypatch.setattr(cli_analyze.os, "replace", failing)
    assert main(["analyze", str(tmp_path), "--out", str(out), "--csv", str(table), "--slices", "3"]) == 5
    after = {p.name: p.read_bytes() for p in (table, out / "result.json", out / "overlay.png")}
    assert after == before  # the earlier rows and results, byte for byte
    assert not [p for p in tmp_path.rglob(".sarcoscope-*")]


def test_csv_errors_name_the_users_file_not_the_staging_copy(fake_analyze, tmp_path, capsys):
    table = tmp_path / "rows.csv"
    table.write_bytes("Größe;Gewicht\n".encode("cp1252"))
    rc = main(["analyze", str(tmp_path), "--csv", str(table), "--slices", "2"])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 5
    assert f"--csv {table}: the file is not UTF-8 text" in err and ".sarcoscope-" not in err
    assert fake_analyze == []


def test_csv_or_labels_naming_a_file_that_out_receives_is_refused(fake_analyze, tmp_path, capsys):
    out = tmp_path / "o"
    for option, name in (("--csv", "result.json"), ("--labels", "overlay.png")):
        rc = main(["analyze", str(tmp_path), "--out", str(out), option, str(out / name), "--slices", "2"])
        err = " ".join(capsys.readouterr().err.split())
        assert rc == 5 and f"is the {name} that --out {out} receives" in err
    assert fake_analyze == [] and not out.exists()


def test_parallel_runs_appending_to_one_csv_keep_every_row(monkeypatch, tmp_path):
    # a batch with several workers: each run copies the CSV, appends, replaces it
    from concurrent.futures import ThreadPoolExecutor

    import sarcoscope.cli.analyze as cli_analyze
    from sarcoscope.cli.analyze import write_outputs

    real_copy = cli_analyze.shutil.copyfile

    def slow_copy(src, dst):  # widen the window in which another run could replace the file
        real_copy(src, dst)
        time.sleep(0.05)

    monkeypatch.setattr(cli_analyze.shutil, "copyfile", slow_copy)
    table = tmp_path / "rows.csv"
    result = _fake_result("2")
    write_outputs(result, out_dir=None, csv_path=table, input_label="scan-0")
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda i: write_outputs(result, out_dir=None, csv_path=table, input_label=f"scan-{i}"),
                      range(1, 13)))
    rows = table.read_text(encoding="utf-8").splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == sorted(f"scan-{i}" for i in range(13))
    assert not (tmp_path / "rows.csv.lock").exists()
