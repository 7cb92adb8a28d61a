"""Parameters of a synthetic body and its spine, and how to draw plausible ones at random.

A :class:`PhantomParams` describes one patient and one acquisition (what the scanner did);
a :class:`SpineParams` the counting-relevant anatomy of the spine. Both are frozen and
validated on construction so a bad value fails where it is set, not deep in the renderer.
Ranges come from ``shared/ANATOMY.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal

import numpy as np

Sex = Literal["M", "F"]
Contrast = Literal["none", "arterial", "portal"]
Arms = Literal["raised", "beside"]

#: Vertebral levels a single phantom slice can be centred on (mid vertebral body).
SLICE_LEVELS: tuple[str, ...] = ("T12", "L1", "L2", "L3", "L4", "L5")


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)):
        raise ValueError(f"PhantomParams.{name} must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"PhantomParams.{name}={value} is outside {lo}..{hi}")


@dataclass(frozen=True)
class PhantomParams:
    """One synthetic patient and acquisition.

    Sizes are in mm, HU in Hounsfield units. ``sat_mm`` is the typical subcutaneous fat
    thickness at the flank (it varies around the body). ``muscle_scale`` scales every muscle
    group (1 = an average adult of this sex). ``imat_fraction`` is the share of the muscle
    fascia envelope occupied by fat marbling; ``vat_fraction`` the share of the free visceral
    space occupied by fat (the rest is bowel). ``kernel_sharpness`` runs from 0 (soft,
    blurred, low-frequency noise) to 1 (sharp bone kernel: crisp edges, fine-grained noise).
    ``recon_circle`` blanks pixels outside the inscribed reconstruction circle to AIR_HU
    (as readers do with PixelPaddingValue). ``fov_offset_mm`` = (x, y) offset of the field-of-view centre from the body centre in
    patient LPS mm (x towards the patient's left, y posterior): large offsets cut the body off.
    """

    sex: Sex = "M"
    height_m: float = 1.75
    weight_kg: float = 78.0
    age_years: float = 60.0
    body_lateral_mm: float = 330.0
    body_ap_mm: float = 240.0
    sat_mm: float = 22.0
    muscle_scale: float = 1.0
    muscle_hu: float = 42.0
    imat_fraction: float = 0.05
    vat_fraction: float = 0.45
    noise_sd: float = 15.0
    kernel_sharpness: float = 0.3
    pixel_spacing_mm: float = 0.78
    matrix: tuple[int, int] = (512, 512)
    fov_offset_mm: tuple[float, float] = (0.0, 0.0)
    contrast: Contrast = "none"
    oral_contrast: bool = False
    arms: Arms = "raised"
    table: bool = True
    blanket: bool = False
    metal_implant: bool = False
    ascites: float = 0.0
    recon_circle: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sex not in ("M", "F"):
            raise ValueError(f"PhantomParams.sex must be 'M' or 'F', got {self.sex!r}")
        _check_range("height_m", self.height_m, 1.3, 2.2)
        _check_range("weight_kg", self.weight_kg, 30.0, 250.0)
        _check_range("age_years", self.age_years, 18.0, 100.0)
        _check_range("body_lateral_mm", self.body_lateral_mm, 200.0, 560.0)
        _check_range("body_ap_mm", self.body_ap_mm, 140.0, 420.0)
        _check_range("sat_mm", self.sat_mm, 1.0, 150.0)
        _check_range("muscle_scale", self.muscle_scale, 0.4, 1.6)
        _check_range("muscle_hu", self.muscle_hu, 5.0, 70.0)
        _check_range("imat_fraction", self.imat_fraction, 0.0, 0.35)
        _check_range("vat_fraction", self.vat_fraction, 0.02, 0.9)
        _check_range("noise_sd", self.noise_sd, 0.0, 80.0)
        _check_range("kernel_sharpness", self.kernel_sharpness, 0.0, 1.0)
        _check_range("pixel_spacing_mm", self.pixel_spacing_mm, 0.3, 4.0)
        _check_range("ascites", self.ascites, 0.0, 1.0)
        if (
            len(self.matrix) != 2
            or any(int(m) != m or not 32 <= m <= 2048 for m in self.matrix)
        ):
            raise ValueError(f"PhantomParams.matrix must be two integers 32..2048, got {self.matrix}")
        if self.contrast not in ("none", "arterial", "portal"):
            raise ValueError(
                f"PhantomParams.contrast must be 'none', 'arterial' or 'portal', got {self.contrast!r}"
            )
        if self.arms not in ("raised", "beside"):
            raise ValueError(f"PhantomParams.arms must be 'raised' or 'beside', got {self.arms!r}")
        if len(self.fov_offset_mm) != 2 or not all(math.isfinite(v) for v in self.fov_offset_mm):
            raise ValueError(f"PhantomParams.fov_offset_mm must be two finite numbers, got {self.fov_offset_mm}")
        # The muscle wall must leave a visceral cavity: SAT on both sides plus ~130 mm.
        inner_lat = self.body_lateral_mm - 2.0 * self.sat_mm * 1.1
        inner_ap = self.body_ap_mm - 2.0 * self.sat_mm * 0.9
        if inner_lat < 170.0 or inner_ap < 110.0:
            raise ValueError(
                f"PhantomParams: sat_mm={self.sat_mm} leaves no room inside a body of "
                f"{self.body_lateral_mm}x{self.body_ap_mm} mm (inside the fat: "
                f"{inner_lat:.0f}x{inner_ap:.0f} mm, need at least 170x110); "
                "make the body larger or the fat thinner"
            )
        object.__setattr__(self, "matrix", (int(self.matrix[0]), int(self.matrix[1])))
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def bmi(self) -> float:
        return self.weight_kg / self.height_m**2

    def with_(self, **changes: object) -> "PhantomParams":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class SpineParams:
    """Counting-relevant spine anatomy.

    Naming convention (the ground truth the L3 finder is scored against): vertebrae are
    counted from the top. ``rib_pairs`` thoracic vertebrae each carry a rib pair (11 or 13
    shift every lumbar name relative to a 12-rib spine's *last rib*); then ``lumbar_count``
    rib-less lumbar vertebrae L1..Ln (4 = sacralisation of the last lumbar, 6 = lumbarisation
    of S1); then the sacrum. ``lumbar_rib`` adds a short rudimentary rib on L1 (it stays L1);
    ``hypoplastic_last_rib`` makes the last thoracic rib pair short (< ~40 mm).
    """

    rib_pairs: int = 12
    lumbar_count: int = 5
    lumbar_rib: bool = False
    hypoplastic_last_rib: bool = False
    size_scale: float = 1.0
    lordosis_mm: float = 20.0
    disc_mm: float = 10.0

    def __post_init__(self) -> None:
        if self.rib_pairs not in (11, 12, 13):
            raise ValueError(f"SpineParams.rib_pairs must be 11, 12 or 13, got {self.rib_pairs}")
        if self.lumbar_count not in (4, 5, 6):
            raise ValueError(f"SpineParams.lumbar_count must be 4, 5 or 6, got {self.lumbar_count}")
        if not 0.75 <= self.size_scale <= 1.3:
            raise ValueError(f"SpineParams.size_scale={self.size_scale} is outside 0.75..1.3")
        if not -10.0 <= self.lordosis_mm <= 50.0:
            raise ValueError(f"SpineParams.lordosis_mm={self.lordosis_mm} is outside -10..50")
        if not 6.0 <= self.disc_mm <= 14.0:
            raise ValueError(f"SpineParams.disc_mm={self.disc_mm} is outside 6..14")

    @property
    def variant(self) -> str:
        """Short description: "normal" or the variants joined by '+'."""
        parts = []
        if self.rib_pairs != 12:
            parts.append(f"{self.rib_pairs}-rib-pairs")
        if self.lumbar_count == 4:
            parts.append("sacralisation")
        elif self.lumbar_count == 6:
            parts.append("lumbarisation")
        if self.lumbar_rib:
            parts.append("lumbar-rib")
        if self.hypoplastic_last_rib:
            parts.append("hypoplastic-last-rib")
        return "+".join(parts) if parts else "normal"


def random_spine(rng: np.random.Generator, **overrides: object) -> SpineParams:
    """Draw a spine with variant frequencies from ANATOMY.md.

    Sacralisation 12.3 %, lumbarisation 4.0 %, lumbar rib ~3 %, hypoplastic 12th rib ~13 %,
    11 or 13 rib pairs ~2 % each.
    """
    u = rng.random()
    lumbar = 4 if u < 0.123 else (6 if u < 0.163 else 5)
    v = rng.random()
    ribs = 11 if v < 0.02 else (13 if v < 0.04 else 12)
    values: dict[str, object] = dict(
        rib_pairs=ribs,
        lumbar_count=lumbar,
        lumbar_rib=bool(rng.random() < 0.03),
        hypoplastic_last_rib=bool(rng.random() < 0.13),
        size_scale=float(np.clip(rng.normal(1.0, 0.07), 0.8, 1.25)),
        lordosis_mm=float(np.clip(rng.normal(20.0, 8.0), -5.0, 45.0)),
        disc_mm=float(rng.uniform(8.0, 12.0)),
    )
    values.update(overrides)
    return SpineParams(**values)  # type: ignore[arg-type]


def random_params(rng: np.random.Generator, **overrides: object) -> PhantomParams:
    """Draw a plausible adult body and acquisition.

    Body habitus first (sex, age, height, BMI), then fat and muscle consistent with it, then
    the outline size that holds them; acquisition settings independently. Any field can be
    fixed through ``overrides`` (they are applied before the dependent fields are derived
    where that matters, e.g. ``sex``). Calibrated so that L3 truth areas stay within
    ANATOMY.md ranges (muscle ~75–200 cm², SAT 30–600, VAT 10–400, IMAT 2–30).
    """
    valid = {f.name for f in fields(PhantomParams)}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"random_params: unknown override(s) {sorted(unknown)}; valid: {sorted(valid)}")
    o = overrides
    sex = o.get("sex", "M" if rng.random() < 0.5 else "F")
    age = float(o.get("age_years", rng.uniform(20, 90)))
    male = sex == "M"
    height = float(o.get("height_m", np.clip(rng.normal(1.76 if male else 1.63, 0.07), 1.45, 2.05)))
    # BMI: log-normal-ish around 26, a tail of cachexia and of obesity.
    bmi = float(np.clip(np.exp(rng.normal(np.log(26.0), 0.2)), 15.5, 50.0))
    if rng.random() < 0.06:
        bmi = float(rng.uniform(15.5, 19.0))  # cachexia
    weight = float(o.get("weight_kg", np.clip(bmi * height**2, 32.0, 240.0)))
    bmi = weight / height**2
    fatness = np.clip((bmi - 17.0) / 23.0, 0.0, 1.0)  # 0 cachexia .. 1 BMI 40+
    # SAT thickness: few mm in cachexia, >100 mm in morbid obesity; women more.
    sat = 2.0 + 52.0 * fatness**1.5 * (1.15 if not male else 0.95) * rng.uniform(0.75, 1.2)
    sat = float(o.get("sat_mm", np.clip(sat, 2.0, 140.0)))
    # Muscle: men more; falls with age; a little more with weight.
    mscale = (1.16 if male else 0.98) * (1.0 - 0.004 * max(age - 40.0, 0.0))
    mscale *= (height / (1.76 if male else 1.63)) ** 1.2 * (1.0 + 0.25 * (fatness - 0.4))
    mscale *= rng.normal(1.0, 0.1)
    mscale = float(o.get("muscle_scale", np.clip(mscale, 0.55, 1.25 if male else 1.1)))
    # tissue HU; the Alberta mean measured on the slice runs ~5-12 HU lower (partial volume
    # with fat, marbling), which lands the measured means in the published 25-60 HU range
    mhu = 60.0 - 0.22 * max(age - 30.0, 0.0) - 14.0 * fatness + rng.normal(0, 5)
    mhu = float(o.get("muscle_hu", np.clip(mhu, 22.0, 68.0)))
    imat = 0.005 + 0.025 * fatness + 0.0004 * max(age - 30, 0) + rng.exponential(0.008)
    imat += 0.001 * max(45.0 - mhu, 0.0)
    imat = float(o.get("imat_fraction", np.clip(imat, 0.005, 0.25)))
    vatf = 0.12 + 0.55 * fatness * (1.15 if male else 0.85) + 0.002 * max(age - 40, 0)
    vatf = float(o.get("vat_fraction", np.clip(vatf * rng.uniform(0.7, 1.25), 0.04, 0.85)))
    # Outline: skeleton frame + muscle + visceral content + SAT.
    inner_lat = (232.0 if male else 215.0) * (height / 1.7) ** 0.5 * (0.92 + 0.1 * mscale)
    inner_lat *= 1.0 + 0.45 * vatf**1.3
    inner_ap = inner_lat * rng.uniform(0.58, 0.72) * (1.0 + 0.25 * vatf)
    lat = float(o.get("body_lateral_mm", np.clip(inner_lat + 2.1 * sat * rng.uniform(0.9, 1.1), 210, 550)))
    ap = float(o.get("body_ap_mm", np.clip(inner_ap + 1.8 * sat * rng.uniform(0.9, 1.1), 150, 410)))
    # Acquisition.
    low_dose = rng.random() < 0.25
    noise = rng.uniform(25, 45) if low_dose else rng.uniform(8, 25)
    noise *= 1.0 + 0.25 * fatness
    fov = max(lat + rng.uniform(-30, 80), 320.0)
    if rng.random() < 0.75:
        matrix = (512, 512)
        spacing = float(np.clip(fov / 512.0, 0.5, 1.0))
    else:
        m = int(rng.choice([256, 320, 384, 512, 768]))
        matrix = (m, m)
        spacing = float(np.clip(fov / m * rng.uniform(0.95, 1.1), 0.5, 3.0))
        if rng.random() < 0.3:
            spacing = float(rng.uniform(1.0, 3.0))
            matrix = (int(np.clip(fov / spacing, 128, 512)),) * 2
    contrast = str(rng.choice(["none", "arterial", "portal"], p=[0.35, 0.15, 0.5]))
    off_sd = 8.0 if fov > lat + 20 else 25.0
    offset = (float(rng.normal(0, off_sd)), float(rng.normal(0, off_sd * 0.8)))
    values: dict[str, object] = dict(
        sex=sex,
        height_m=height,
        weight_kg=weight,
        age_years=age,
        body_lateral_mm=lat,
        body_ap_mm=ap,
        sat_mm=sat,
        muscle_scale=mscale,
        muscle_hu=mhu,
        imat_fraction=imat,
        vat_fraction=vatf,
        noise_sd=float(np.clip(noise, 6.0, 55.0)),
        kernel_sharpness=float(rng.beta(2.0, 2.0)),
        pixel_spacing_mm=spacing,
        matrix=matrix,
        fov_offset_mm=offset,
        contrast=contrast,
        oral_contrast=bool(rng.random() < 0.25),
        arms="beside" if rng.random() < 0.15 else "raised",
        table=bool(rng.random() < 0.95),
        blanket=bool(rng.random() < 0.3),
        metal_implant=bool(rng.random() < 0.04),
        ascites=float(rng.uniform(0.1, 0.8)) if rng.random() < 0.06 else 0.0,
        recon_circle=bool(rng.random() < 0.4),
        seed=int(rng.integers(0, 2**31 - 1)),
    )
    values.update(o)
    # Keep SAT compatible with the outline when the caller fixed one but not the other.
    lat_v, ap_v = float(values["body_lateral_mm"]), float(values["body_ap_mm"])
    max_sat = min((lat_v - 175.0) / 2.2, (ap_v - 115.0) / 1.8)
    if "sat_mm" not in o and float(values["sat_mm"]) > max_sat:
        values["sat_mm"] = max(1.0, max_sat)
    return PhantomParams(**values)  # type: ignore[arg-type]
