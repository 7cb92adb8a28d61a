"""Training configuration: one TOML file describes a model from data to export.

Pure data (no torch), so the CLI can validate a config before importing the heavy parts.
Relative paths in a config are taken relative to the current directory.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sarcoscope.errors import ConfigError

LEVELS: tuple[str, ...] = ("T12", "L1", "L2", "L3", "L4", "L5")


@dataclass(frozen=True)
class DataConfig:
    """Which synthetic slices to generate and where to cache them."""

    generator: str = "phantom"  # "phantom" (sarcoscope.phantom) or "toy" (tests only)
    n_train: int = 3000
    n_val: int = 64
    canvas: int = 288  # cached model-grid slices are canvas x canvas pixels
    levels: tuple[str, ...] = LEVELS
    level_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 3.0, 1.0, 1.0)
    cache_dir: str = "runs/cache"
    workers: int = 2  # generator processes; 0 = one per CPU


@dataclass(frozen=True)
class GridConfig:
    spacing_mm: float = 1.5
    windows: tuple[tuple[float, float], ...] = ((-250.0, 250.0), (-1000.0, 1000.0))


@dataclass(frozen=True)
class ModelConfig:
    channels: tuple[int, ...] = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the on-the-fly augmentation (see ``train.augment``)."""

    flip_lr_p: float = 0.0  # anatomy is not symmetric (liver right); off by default
    rotate_deg: float = 15.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    aspect_range: tuple[float, float] = (0.9, 1.1)
    shift_frac: float = 0.15
    elastic_p: float = 0.5
    elastic_mm: float = 6.0
    hu_shift_sd: float = 6.0
    hu_scale_sd: float = 0.03
    noise_p: float = 0.7
    noise_sd_hu: tuple[float, float] = (3.0, 35.0)
    blur_p: float = 0.3
    blur_sigma_px: tuple[float, float] = (0.3, 1.0)
    lowres_p: float = 0.15
    lowres_factor: tuple[float, float] = (1.3, 2.0)
    gamma_p: float = 0.3
    gamma_range: tuple[float, float] = (0.8, 1.25)
    cutout_p: float = 0.15
    cutout_max: int = 3


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 3000
    batch_size: int = 8
    crop: int = 192
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    threads: int = 2
    max_minutes: float = 60.0
    val_every: int = 250
    class_weights: tuple[float, ...] = (0.5, 1.5, 1.0, 1.0)  # none, envelope, visceral, subcutaneous
    dice_weight: float = 1.0
    freeze_bn: bool = False  # BatchNorm kept in inference mode; always so when training from --init
    device: str = "cpu"  # "cpu", "cuda" or "auto" (cuda when torch sees a GPU); inference is CPU either way


@dataclass(frozen=True)
class FinetuneConfig:
    """Bring-your-own annotations (``train --init MODEL --data DIR``).

    ``tag_map``: Slice-O-Matic tag value → our label (1 muscle, 2 IMAT, 3 VAT, 4 SAT, 0 ignore),
    for ``.tag`` files only; ``holdout_fraction``: share of the slices held out for the
    before/after report (never trained on, never used to pick the checkpoint); ``steps`` and
    ``lr``: the fine-tuning budget (``[train]`` batch_size, crop, val_every, max_minutes apply too).
    """

    tag_map: dict[int, int] = field(default_factory=lambda: {1: 1, 2: 2, 5: 3, 7: 4})
    holdout_fraction: float = 0.25
    steps: int = 300
    lr: float = 3e-4


@dataclass(frozen=True)
class Config:
    name: str = "sarcoscope-l3"
    version: str = "0.0.0"
    seed: int = 0
    out: str = "models/sarcoscope-l3.onnx"
    run_dir: str = "runs/sarcoscope-l3"
    data: DataConfig = field(default_factory=DataConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """Short hash of the settings that define the model (for the card and cache names)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]


_SECTIONS = {
    "data": DataConfig,
    "grid": GridConfig,
    "model": ModelConfig,
    "augment": AugmentConfig,
    "train": OptimConfig,
    "finetune": FinetuneConfig,
}


def _coerce(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting '{key}'; known: {', '.join(sorted(known))}")
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        elif isinstance(default, dict):
            value = parse_value_map(value, f"{where} {key}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key}: expected true/false, got {value!r}")
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        elif type(default) is not type(value):
            raise ConfigError(f"{where}.{key}: expected {type(default).__name__}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def parse_value_map(raw: object, where: str) -> dict[int, int]:
    """A value map (source 0..255 → label 0..4) from a TOML table or a parsed ``--label-map``.

    Raises ConfigError naming ``where`` (the setting or option), so a typo in a config is never
    blamed on a mask file nor reported as an internal error.
    """
    example = "{1 = 1, 2 = 2, 5 = 3, 7 = 4}" if "[" in where else "1=1,2=2,5=3,7=4"
    what = "labels 1 muscle, 2 IMAT, 3 VAT, 4 SAT, 0 to ignore a value"
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{where}: expected a table of tag value = label pairs such as {example} ({what}), got {raw!r}"
        )
    out: dict[int, int] = {}
    for src, dst in raw.items():
        try:
            s, d = int(src), dst
            if isinstance(d, bool) or not isinstance(d, int):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: entry {src!r} = {dst!r} is not an integer pair; write it like {example} ({what})"
            ) from None
        if not (0 <= s <= 255 and 0 <= d <= 4):
            raise ConfigError(
                f"{where}: entry {s} = {d} is out of range; source values are 0..255 and targets 0..4 ({what})"
            )
        out[s] = d
    return out


def load_config(path: Path) -> Config:
    """Read and validate a TOML training config; raise ConfigError naming the file and setting."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"training config {path} not found; see configs/shipped.toml for an example") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"training config {path} is not valid TOML: {exc}") from exc
    top: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
            top[key] = _coerce(_SECTIONS[key], value, f"{path} [{key}]")
        elif key in ("name", "version", "out", "run_dir"):
            if not isinstance(value, str):
                raise ConfigError(f"{path}: '{key}' must be a string, got {value!r}")
            top[key] = value
        elif key == "seed":
            if not isinstance(value, int):
                raise ConfigError(f"{path}: 'seed' must be an integer, got {value!r}")
            top[key] = value
        else:
            raise ConfigError(f"{path}: unknown setting '{key}'")
    cfg = Config(**top)
    _validate(cfg, path)
    return cfg


def _validate(cfg: Config, path: Path) -> None:
    d, t = cfg.data, cfg.train
    if d.generator not in ("phantom", "toy"):
        raise ConfigError(f"{path} [data] generator '{d.generator}' unknown; use 'phantom' or 'toy'")
    if len(d.levels) != len(d.level_weights) or not d.levels:
        raise ConfigError(f"{path} [data] levels and level_weights must be non-empty and of equal length")
    if d.workers < 0:
        raise ConfigError(f"{path} [data] workers must be >= 0 (0 = one per CPU)")
    if d.n_train < 1 or d.n_val < 1:
        raise ConfigError(f"{path} [data] n_train and n_val must be >= 1")
    divisor = 2 ** (len(cfg.model.channels) - 1)
    for key, size in (("data.canvas", d.canvas), ("train.crop", t.crop)):
        if size % divisor:
            raise ConfigError(f"{path} {key}={size} must be a multiple of {divisor} (2 ** poolings)")
    if t.crop > d.canvas:
        raise ConfigError(f"{path} train.crop {t.crop} is larger than data.canvas {d.canvas}")
    if len(t.class_weights) != 4:
        raise ConfigError(f"{path} train.class_weights needs 4 values (none, muscle envelope, visceral fat, subcutaneous fat)")
    if t.device not in ("cpu", "cuda", "auto"):
        raise ConfigError(f"{path} train.device '{t.device}' unknown; use 'cpu', 'cuda' or 'auto'")
    if t.steps < 1 or t.batch_size < 1:
        raise ConfigError(f"{path} train.steps and train.batch_size must be >= 1")
    f = cfg.finetune
    if not 0.0 < f.holdout_fraction < 1.0:
        raise ConfigError(
            f"{path} [finetune] holdout_fraction {f.holdout_fraction} must lie between 0 and 1 (e.g. 0.25)"
        )
    if f.steps < 1:
        raise ConfigError(f"{path} [finetune] steps must be >= 1, got {f.steps}")
    if not f.lr > 0:
        raise ConfigError(f"{path} [finetune] lr must be positive, got {f.lr}")


def with_overrides(cfg: Config, **kwargs: Any) -> Config:
    return replace(cfg, **kwargs)
