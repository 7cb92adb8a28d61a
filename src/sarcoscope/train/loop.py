"""Training from a config: cache synthetic slices, train the U-Net, export the best to ONNX.

Written for a small CPU (a GPU is used when the config asks for one: ``train.device``): a
cached data set on the model grid (generation is the slow part),
batched torch augmentation, a step budget plus a wall-clock guard, validation every
``val_every`` steps with the best checkpoint kept, and periodic checkpoints in ``run_dir`` so
a long run can be inspected while it goes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sarcoscope.errors import ConfigError
from sarcoscope.segment.onnx_model import COMPARTMENT_NAMES, N_COMPARTMENTS, GridSpec
from sarcoscope.train.augment import augment_batch, center_crop_batch
from sarcoscope.train.config import Config
from sarcoscope.train.data import STREAM_TRAIN, STREAM_VAL, CachedSet, SliceSource, build_cache
from sarcoscope.train.export import export_onnx, unet_from_onnx, write_card
from sarcoscope.train.model import UNet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    onnx_path: Path
    sha256: str
    steps_done: int
    minutes: float
    best_val_dice: dict[str, float]
    card_path: Path


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` returns: the model with the best checked weights loaded (on the CPU), their
    validation Dice, steps run, minutes, how many validation checks were made and at which step
    the best one was (0 when none was made)."""

    model: UNet
    best_val_dice: dict[str, float]
    steps_done: int
    minutes: float
    n_checks: int
    best_step: int
    stopped_by_time: bool


def grid_spec(cfg: Config) -> GridSpec:
    return GridSpec(
        spacing_mm=cfg.grid.spacing_mm,
        divisor=2 ** (len(cfg.model.channels) - 1),
        windows=cfg.grid.windows,
    )


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice over the three compartments, pooled over the batch (absent classes skipped)."""
    prob = logits.softmax(dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return (1 - dice[present]).mean() if bool(present.any()) else logits.sum() * 0


def dice_per_class(pred: np.ndarray, ref: np.ndarray, n_classes: int = 5) -> np.ndarray:
    """Hard Dice for labels 1..n-1 (pooled); NaN where a class is absent in both."""
    out = np.full(n_classes - 1, np.nan)
    for k in range(1, n_classes):
        p, r = pred == k, ref == k
        s = p.sum() + r.sum()
        if s:
            out[k - 1] = 2 * np.logical_and(p, r).sum() / s
    return out


def resolve_device(name: str) -> torch.device:
    """``train.device`` → a torch device; "cuda" without a visible GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but torch sees no GPU; use 'cpu' or 'auto'")
    return torch.device(name)


def _validate(
    model: UNet, val: CachedSet, spec: GridSpec, batch: int = 8, device: torch.device | None = None
) -> np.ndarray:
    model.eval()
    inter = np.zeros(N_COMPARTMENTS - 1)
    denom = np.zeros(N_COMPARTMENTS - 1)
    with torch.no_grad():
        for i in range(0, val.hu.shape[0], batch):
            x, y = center_crop_batch(val.hu[i : i + batch], val.labels[i : i + batch], spec)
            if device is not None:
                x = x.to(device)
            pred = model(x).argmax(dim=1).cpu().numpy()
            ref = y.numpy()
            for k in range(1, N_COMPARTMENTS):
                p, r = pred == k, ref == k
                inter[k - 1] += np.logical_and(p, r).sum()
                denom[k - 1] += p.sum() + r.sum()
    model.train()
    with np.errstate(invalid="ignore"):
        return 2 * inter / denom


def _lr_at(step: int, cfg: Config, base_lr: float, total: int, minutes: float) -> float:
    """Linear warm-up, then cosine decay along whichever is further: steps or the time budget.

    Following the clock too means a run slowed down by a busy machine still anneals before
    ``max_minutes`` stops it.
    """
    warm = cfg.train.warmup_steps
    if step < warm:
        return base_lr * (step + 1) / warm
    progress = max((step - warm) / max(1, total - warm), minutes / cfg.train.max_minutes)
    return base_lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _cpu_state(model: UNet) -> dict[str, torch.Tensor]:
    """A copy of the weights on the CPU, so checkpoints load on machines without a GPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _freeze_bn(model: UNet) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def fit(
    model: UNet,
    train: CachedSet,
    val: CachedSet,
    cfg: Config,
    spec: GridSpec,
    run_dir: Path,
    *,
    steps: int,
    lr: float,
    freeze_bn: bool = False,
) -> FitResult:
    """Optimise ``model`` for ``steps`` steps, validating every ``cfg.train.val_every`` steps and
    at the last step run (the step budget's or the ``max_minutes`` guard's); the best-validated
    weights are returned."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        # fastest convolution algorithms; like the GPU kernels themselves, not bit-for-bit
        # reproducible from run to run (the draws from ``cfg.seed`` are)
        torch.backends.cudnn.benchmark = True
        logger.info("training on %s", torch.cuda.get_device_name(device))
    model = model.to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 99])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.train.weight_decay)
    weights = torch.tensor(cfg.train.class_weights, dtype=torch.float32, device=device)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    best_score, best_dice, best_state = -1.0, {}, None
    t0 = time.perf_counter()
    n = train.hu.shape[0]
    model.train()
    if freeze_bn:
        _freeze_bn(model)
    running = 0.0
    step = 0
    n_checks, best_step, stopped_by_time = 0, 0, False
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg, lr, steps, (time.perf_counter() - t0) / 60)
        idx = np.sort(rng.choice(n, size=cfg.train.batch_size, replace=n < cfg.train.batch_size))
        x, y = augment_batch(train.hu[idx], train.labels[idx], cfg.train.crop, spec, cfg.augment, g, device)
        logits = model(x)
        loss = F.cross_entropy(logits, y, weight=weights) + cfg.train.dice_weight * dice_loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = loss.item()
        running = 0.98 * running + 0.02 * loss_value if step else loss_value
        minutes = (time.perf_counter() - t0) / 60
        last = step == steps - 1 or minutes > cfg.train.max_minutes
        if (step + 1) % cfg.train.val_every == 0 or last:
            dice = _validate(model, val, spec, device=device)
            if freeze_bn:
                _freeze_bn(model)
            score = float(np.nanmean(dice))
            n_checks += 1
            record = {
                "step": step + 1, "minutes": round(minutes, 2), "loss": round(running, 4),
                "lr": opt.param_groups[0]["lr"], "val_dice": [round(float(d), 4) for d in dice], "val_mean": round(score, 4),
            }
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            logger.info("step %d  %.1f min  loss %.4f  val dice %s", step + 1, minutes, running, np.round(dice, 4))
            torch.save({"model": _cpu_state(model), "step": step + 1}, run_dir / "last.pt")
            if score > best_score:
                best_score = score
                best_step = step + 1
                best_dice = dict(zip(COMPARTMENT_NAMES[1:], (round(float(d), 4) for d in dice)))
                best_state = _cpu_state(model)
                torch.save({"model": best_state, "step": step + 1, "val_dice": best_dice}, run_dir / "best.pt")
        elif (step + 1) % 25 == 0:
            logger.info("step %d  %.1f min  loss %.4f", step + 1, minutes, running)
        if minutes > cfg.train.max_minutes:
            logger.warning("stopping at step %d: max_minutes %.0f reached", step + 1, cfg.train.max_minutes)
            stopped_by_time = step + 1 < steps
            break
    model = model.to("cpu")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(model, best_dice, step + 1, (time.perf_counter() - t0) / 60, n_checks, best_step,
                     stopped_by_time)


def _machine_text(cfg: Config) -> str:
    text = f"{platform.machine()} {platform.processor() or ''}".strip() + f", torch {torch.__version__}, threads {cfg.train.threads}"
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        text += f", trained on {torch.cuda.get_device_name(device)}"
    return text


def train_from_config(cfg: Config, *, out: Path | None = None, init: Path | None = None) -> TrainResult:
    """Reproduce a model from its config: generate/cache data, train, export ONNX + card."""
    torch.set_num_threads(max(1, cfg.train.threads))
    resolve_device(cfg.train.device)  # a GPU asked for but missing fails now, not after the data
    spec = grid_spec(cfg)
    run_dir = Path(cfg.run_dir)
    d = cfg.data
    workers = d.workers or os.cpu_count() or 1  # 0: every CPU (the slices do not depend on it)
    t_start = time.perf_counter()
    train = build_cache(
        SliceSource(d.generator, cfg.seed, STREAM_TRAIN, d.levels, d.level_weights),
        d.n_train, spec, d.canvas, Path(d.cache_dir), workers,
    )
    val = build_cache(
        SliceSource(d.generator, cfg.seed, STREAM_VAL, d.levels, d.level_weights),
        d.n_val, spec, d.canvas, Path(d.cache_dir), workers,
    )
    data_minutes = (time.perf_counter() - t_start) / 60
    if init is not None:
        model, init_spec = unet_from_onnx(init)
        if init_spec != spec:
            logger.warning("initial model's grid %s differs from the config's %s; using the config's", init_spec, spec)
    else:
        torch.manual_seed(cfg.seed)
        model = UNet(len(spec.windows), N_COMPARTMENTS, cfg.model.channels)
    # an exported file has its BatchNorm folded into the convolutions (the rebuilt BatchNorm
    # layers are identities): batch statistics would rescale every layer, so keep them frozen
    freeze_bn = cfg.train.freeze_bn or init is not None
    fitted = fit(model, train, val, cfg, spec, run_dir, steps=cfg.train.steps, lr=cfg.train.lr, freeze_bn=freeze_bn)
    model, best_dice, steps_done, minutes = fitted.model, fitted.best_val_dice, fitted.steps_done, fitted.minutes
    out_path = Path(out) if out is not None else Path(cfg.out)
    sha = export_onnx(model, spec, out_path, name=cfg.name, version=cfg.version, extra={"config_digest": cfg.digest()})
    n_params = sum(p.numel() for p in model.parameters())
    card = {
        "name": cfg.name,
        "version": cfg.version,
        "file": out_path.name,
        "sha256": sha,
        "size_bytes": out_path.stat().st_size,
        "architecture": {
            "type": "2-D U-Net", "channels": list(cfg.model.channels), "parameters": n_params,
            "norm": "BatchNorm", "input": [f"HU window {lo:g}..{hi:g} scaled to -1..1" for lo, hi in spec.windows],
            "output": "logits of the compartments " + ", ".join(COMPARTMENT_NAMES) + "; tissues by Alberta HU gating",
        },
        "grid": json.loads(spec.to_json()),
        "training": {
            "config": cfg.to_dict(),
            "config_digest": cfg.digest(),
            "initialised_from": str(init) if init else None,
            "steps_done": steps_done,
            "train_minutes": round(minutes, 1),
            "data_minutes": round(data_minutes, 1),
            "generator_fingerprint": train.generator_fingerprint,
            "machine": _machine_text(cfg),
            "best_val_dice_model_grid": best_dice,
        },
    }
    card_path = write_card(out_path, card)
    logger.info("exported %s (sha256 %s…) and card %s", out_path, sha[:12], card_path)
    return TrainResult(out_path, sha, steps_done, minutes, best_dice, card_path)
