"""Training configs: the shipped ones load; mistakes are reported with file and setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarcoscope.errors import ConfigError
from sarcoscope.train.config import load_config
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("name", ["shipped.toml", "tiny.toml"])
def test_repo_configs_load(name: str) -> None:
    cfg = load_config(REPO_ROOT / "configs" / name)
    assert cfg.data.generator == "phantom"
    assert cfg.train.crop % 2 ** (len(cfg.model.channels) - 1) == 0
    assert len(cfg.digest()) == 12


def test_shipped_config_never_uses_the_test_stream() -> None:
    from sarcoscope.train.data import STREAM_TEST, STREAM_TRAIN, STREAM_VAL, TEST_SEED

    cfg = load_config(REPO_ROOT / "configs" / "shipped.toml")
    assert cfg.seed != TEST_SEED
    assert STREAM_TEST not in (STREAM_TRAIN, STREAM_VAL)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nstepz = 3\n", "unknown setting 'stepz'"),
        ("[train]\nsteps = 'many'\n", r"\[train\]\.steps: expected int"),
        ("[data]\ngenerator = 'gan'\n", "generator 'gan' unknown"),
        ("[train]\ncrop = 100\n", "train.crop=100 must be a multiple of 16"),
        ("[train]\nclass_weights = [1.0, 2.0]\n", "class_weights needs 4 values"),
        ("seed = 1.5\n", "'seed' must be an integer"),
        ("[train]\ndevice = 'tpu'\n", "train.device 'tpu' unknown"),
        ("[train\n", "not valid TOML"),
        # [finetune] mistakes: once exit 70 "internal error", or blamed on a .tag file (7=44)
        ("[finetune]\ntag_map = {1=1, x=3}\n", r"\[finetune\] tag_map: entry 'x' = 3 is not an integer pair"),
        ("[finetune]\ntag_map = {7='SAT'}\n", r"\[finetune\] tag_map: entry '7' = 'SAT' is not an integer pair"),
        ("[finetune]\ntag_map = [1, 2, 5, 7]\n", r"\[finetune\] tag_map: expected a table .* got \[1, 2, 5, 7\]"),
        ("[finetune]\ntag_map = {7=44}\n", r"\[finetune\] tag_map: entry 7 = 44 is out of range"),
        ("[finetune]\nholdout_fraction = 1.0\n", r"\[finetune\] holdout_fraction 1.0 must lie between 0 and 1"),
        ("[finetune]\nsteps = 0\n", r"\[finetune\] steps must be >= 1"),
    ],
)
def test_config_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")


def test_cuda_without_a_gpu_is_a_config_error() -> None:
    torch = pytest.importorskip("torch")
    from sarcoscope.train.loop import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no GPU"):
            resolve_device("cuda")


def test_finetune_tag_map_from_toml() -> None:
    import tomllib

    from sarcoscope.train.config import parse_value_map

    raw = tomllib.loads("tag_map = {1 = 1, 2 = 2, 5 = 3, 9 = 4}")["tag_map"]
    assert parse_value_map(raw, "c.toml [finetune] tag_map") == {1: 1, 2: 2, 5: 3, 9: 4}
