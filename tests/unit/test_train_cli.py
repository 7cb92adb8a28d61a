"""`sarcoscope train` / `sarcoscope evaluate`: registered, and bad options give exit 2 with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarcoscope.cli.main import main


def test_train_missing_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--config", str(tmp_path / "none.toml")])
    assert code == 2
    assert "none.toml not found" in capsys.readouterr().err


def test_train_init_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import REPO_ROOT

    code = main(["train", "--config", str(REPO_ROOT / "configs" / "tiny.toml"), "--init", str(tmp_path / "m.onnx")])
    assert code == 2
    assert "not found" in capsys.readouterr().err


def test_evaluate_needs_matching_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", "--images", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "one --references per --images" in capsys.readouterr().err


def test_evaluate_bad_label_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", "--images", str(tmp_path), "--references", str(tmp_path / "r.tag"),
                 "--label-map", "1:1", "--segmenter", "baseline", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "SOURCE=TARGET" in capsys.readouterr().err


def test_evaluate_synthetic_baseline_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    code = main(["evaluate", "--synthetic", "2", "--segmenter", "baseline", "--out", str(out)])
    assert code == 0
    for name in ("cases_baseline.csv", "summary_baseline.json", "bland_altman_baseline.png", "summary.md"):
        assert (out / name).is_file(), name
    assert "| baseline | muscle |" in capsys.readouterr().out
    assert '"seed": 777' in (out / "summary.md").read_text()


def test_evaluate_synthetic_on_a_development_seed(tmp_path: Path) -> None:
    """--synthetic-seed scores another phantom stream (other slices), so the test set stays unseen."""
    import csv

    runs = {}
    for seed in ("777", "4242"):
        out = tmp_path / seed
        assert main(["evaluate", "--synthetic", "2", "--synthetic-seed", seed, "--segmenter", "baseline",
                     "--out", str(out)]) == 0
        summary = (out / "summary.md").read_text()
        assert f'"seed": {seed}' in summary
        assert ("held-out" in summary) == (seed == "777")
        with (out / "cases_baseline.csv").open() as fh:
            runs[seed] = list(csv.reader(fh))
    assert runs["777"] != runs["4242"]


def test_synthetic_seed_without_synthetic_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", "--synthetic-seed", "4242", "--images", str(tmp_path), "--references", str(tmp_path),
                 "--segmenter", "baseline", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "give --synthetic too" in capsys.readouterr().err


def test_train_config_typo_in_tag_map_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Once exit 70, "internal error"."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[finetune]\ntag_map = {1=1, x=3}\n")
    code = main(["train", "--config", str(cfg), "--data", str(tmp_path)])
    assert code == 2
    assert "[finetune] tag_map: entry 'x' = 3" in capsys.readouterr().err


def test_train_label_map_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import REPO_ROOT

    tiny = str(REPO_ROOT / "configs" / "tiny.toml")
    assert main(["train", "--config", tiny, "--data", str(tmp_path), "--label-map", "7=44"]) == 2
    assert "--label-map: entry 7 = 44 is out of range" in capsys.readouterr().err
    assert main(["train", "--config", tiny, "--label-map", "1=1"]) == 2
    assert "give --data DIR too" in capsys.readouterr().err


def test_train_help_tells_where_finetuning_writes(capsys: pytest.CaptureFixture[str]) -> None:
    main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "<run_dir>/finetune/<name>-finetuned.onnx" in out.replace("│", "").replace("  ", " ")


def test_training_into_the_model_it_starts_from_is_refused(tmp_path, capsys):
    from sarcoscope.cli.main import main

    model = tmp_path / "start.onnx"
    model.write_bytes(b"the user's model")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'out = "{model.as_posix()}"\n')
    rc = main(["train", "--config", str(cfg), "--init", str(model)])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 5 and "the model it starts from" in err
    assert model.read_bytes() == b"the user's model"
