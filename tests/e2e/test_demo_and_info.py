"""``sarcoscope demo`` (what ``make demo`` runs) and ``sarcoscope info`` through the CLI."""

from __future__ import annotations

import json

from sarcoscope.cli.main import main


def test_demo_writes_a_study_analyses_it_and_compares_with_truth(tmp_path, capsys):
    out = tmp_path / "demo-out"
    rc = main(["demo", "--out", str(out), "--study", str(tmp_path / "study"), "--segmenter", "baseline"])
    captured = capsys.readouterr()
    text = " ".join(captured.out.split())
    assert rc == 0, captured.err
    assert "phantom:" in text and "DICOM slices" in text and "phantom truth cm²" in text
    assert {"overlay.png", "result.json"} <= {p.name for p in out.iterdir()}
    doc = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert doc["source"]["format"] == "dicom" and len(doc["slices"]) >= 1
    assert doc["segmenter"]["name"].startswith("baseline")
    assert f"wrote {out / 'result.json'}" in text
    assert len(list((tmp_path / "study").glob("*.dcm"))) == doc["source"]["shape"][0]


def test_info_runs_without_a_model(capsys):
    assert main(["info"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "pixel data decoders" in out and "reference cut-offs" in out
    assert ("no trained model shipped yet" in out) or ("file:" in out)
