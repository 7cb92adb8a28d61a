"""Pure data: published L3 cut-offs for sarcopenia and myosteatosis, with their citations.

Every result names the reference it was judged against, because the same patient can be
sarcopenic by one published cut-off and not by another (Prado 2008 was derived in obese cancer
patients, Derstine 2018 and van der Werf 2018 in healthy adults). Nothing here imports the rest
of sarcoscope except the leaf modules ``types`` (``Flag``, ``PatientInfo``) and ``errors``, so ``sarcoscope info`` can
print the table without numpy-heavy stages.

Conventions
-----------
* A cut-off is applied as "value *below* threshold is positive" (``<``), or "at or below"
  (``<=``) where the paper wrote ≤; ``Cutoff.inclusive`` records which.
* Sex is never guessed: a cut-off that depends on sex is not evaluated when sex is unknown,
  and a reason is returned instead. The same holds for height (SMI) and BMI.
* BMI classes follow Martin 2013: "BMI < 25" and "BMI >= 25" (kg/m²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sarcoscope.errors import ConfigError
from sarcoscope.types import Flag, PatientInfo, Sex

#: Flag names produced by :func:`evaluate_flags`.
SARCOPENIA = "sarcopenia"
MYOSTEATOSIS = "myosteatosis"
LOW_MUSCLE_AREA = "low_muscle_area"

#: BMI (kg/m²) at which Martin 2013 switches cut-offs.
MARTIN_BMI_SPLIT = 25.0


@dataclass(frozen=True)
class Cutoff:
    """One threshold: positive when the measured value lies below it.

    ``sex`` is ``None`` when the cut-off applies to both sexes; ``bmi_min``/``bmi_max`` bound
    the BMI class it applies to (``bmi_min <= BMI < bmi_max``), ``None`` meaning unbounded and
    BMI not needed.
    """

    threshold: float
    unit: str
    sex: Sex | None = None
    bmi_min: float | None = None
    bmi_max: float | None = None
    inclusive: bool = False  # True: value <= threshold is positive (paper wrote "≤")

    @property
    def needs_bmi(self) -> bool:
        return self.bmi_min is not None or self.bmi_max is not None

    def applies(self, sex: Sex | None, bmi: float | None) -> bool:
        if self.sex is not None and self.sex != sex:
            return False
        if self.needs_bmi:
            if bmi is None:
                return False
            if self.bmi_min is not None and bmi < self.bmi_min:
                return False
            if self.bmi_max is not None and bmi >= self.bmi_max:
                return False
        return True

    def is_positive(self, value: float) -> bool:
        return value <= self.threshold if self.inclusive else value < self.threshold

    def describe(self) -> str:
        who = {"M": "men", "F": "women", None: "both sexes"}[self.sex]
        if self.bmi_min is not None and self.bmi_max is not None:
            who += f", BMI {self.bmi_min:g}–{self.bmi_max:g}"
        elif self.bmi_min is not None:
            who += f", BMI >= {self.bmi_min:g}"
        elif self.bmi_max is not None:
            who += f", BMI < {self.bmi_max:g}"
        op = "<=" if self.inclusive else "<"
        return f"{op} {self.threshold:g} {self.unit} ({who})"


@dataclass(frozen=True)
class Reference:
    """A published set of L3 cut-offs.

    ``smi_cutoffs`` (skeletal muscle index, cm²/m²) define sarcopenia, ``muscle_hu_cutoffs``
    (mean muscle attenuation, HU) define myosteatosis and ``muscle_area_cutoffs`` (cm²) a low
    muscle area usable without height. An empty tuple means the paper gives no such cut-off.
    """

    key: str
    name: str
    citation: str
    doi: str
    population: str
    smi_cutoffs: tuple[Cutoff, ...] = ()
    muscle_hu_cutoffs: tuple[Cutoff, ...] = ()
    muscle_area_cutoffs: tuple[Cutoff, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> list[str]:
        """Human-readable lines for ``sarcoscope info`` and the docs."""
        lines = [f"{self.key}: {self.name}", f"  {self.citation} doi:{self.doi}",
                 f"  population: {self.population}"]
        for label, cuts in (("sarcopenia, SMI", self.smi_cutoffs),
                            ("myosteatosis, muscle HU", self.muscle_hu_cutoffs),
                            ("low muscle area", self.muscle_area_cutoffs)):
            for c in cuts:
                lines.append(f"  {label} {c.describe()}")
        return lines


REFERENCES: dict[str, Reference] = {
    "prado2008": Reference(
        key="prado2008",
        name="Prado 2008 (obese cancer patients)",
        citation=(
            "Prado CMM, Lieffers JR, McCargar LJ, Reiman T, Sawyer MB, Martin L, Baracos VE. "
            "Prevalence and clinical implications of sarcopenic obesity in patients with solid "
            "tumours of the respiratory and gastrointestinal tracts: a population-based study. "
            "Lancet Oncol. 2008;9(7):629-635."
        ),
        doi="10.1016/S1470-2045(08)70153-0",
        population="250 obese (BMI >= 30) patients with lung or GI cancer, Alberta, Canada",
        smi_cutoffs=(
            Cutoff(52.4, "cm²/m²", sex="M", inclusive=True),
            Cutoff(38.5, "cm²/m²", sex="F", inclusive=True),
        ),
        notes=(
            "Cut-offs found by optimum stratification for survival in obese patients; "
            "commonly applied to all BMI classes, which the paper did not study.",
            "No muscle attenuation (myosteatosis) cut-off in this paper.",
        ),
    ),
    "martin2013": Reference(
        key="martin2013",
        name="Martin 2013 (cancer patients, BMI-dependent)",
        citation=(
            "Martin L, Birdsell L, MacDonald N, Reiman T, Clandinin MT, McCargar LJ, Murphy R, "
            "Ghosh S, Sawyer MB, Baracos VE. Cancer cachexia in the age of obesity: skeletal "
            "muscle depletion is a powerful prognostic factor, independent of body mass index. "
            "J Clin Oncol. 2013;31(12):1539-1547."
        ),
        doi="10.1200/JCO.2012.45.2722",
        population="1473 patients with lung or GI cancer, Alberta, Canada",
        smi_cutoffs=(
            Cutoff(43.0, "cm²/m²", sex="M", bmi_max=MARTIN_BMI_SPLIT),
            Cutoff(53.0, "cm²/m²", sex="M", bmi_min=MARTIN_BMI_SPLIT),
            Cutoff(41.0, "cm²/m²", sex="F"),
        ),
        muscle_hu_cutoffs=(
            Cutoff(41.0, "HU", bmi_max=MARTIN_BMI_SPLIT),
            Cutoff(33.0, "HU", bmi_min=MARTIN_BMI_SPLIT),
        ),
        notes=(
            "Sarcopenia in men and myosteatosis (both sexes) depend on BMI: they need height "
            "and weight; sarcopenia in women needs height only.",
        ),
    ),
    "derstine2018": Reference(
        key="derstine2018",
        name="Derstine 2018 (healthy young US adults, mean - 2 SD)",
        citation=(
            "Derstine BA, Holcombe SA, Ross BE, Wang NC, Su GL, Wang SC. Skeletal muscle cutoff "
            "values for sarcopenia diagnosis using T10 to L5 measurements in a healthy US "
            "population. Sci Rep. 2018;8(1):11369."
        ),
        doi="10.1038/s41598-018-29825-5",
        population=(
            "healthy US adults (University of Michigan reference population); cut-off = "
            "mean - 2 SD of its young adults"
        ),
        smi_cutoffs=(
            Cutoff(45.4, "cm²/m²", sex="M"),
            Cutoff(34.4, "cm²/m²", sex="F"),
        ),
        notes=(
            "L3 SMI figures quoted from the paper's abstract as recalled by the authors of "
            "sarcoscope; verify against the paper's cut-off table before clinical use "
            "(see docs/baseline.md).",
            "No muscle attenuation (myosteatosis) cut-off in this paper.",
        ),
    ),
    "vanderwerf2018": Reference(
        key="vanderwerf2018",
        name="van der Werf 2018 (healthy Dutch adults, 5th percentile)",
        citation=(
            "van der Werf A, Langius JAE, de van der Schueren MAE, Nurmohamed SA, "
            "van der Pant KAMI, Blauwhoff-Buskermolen S, Wierdsma NJ. Percentiles for skeletal "
            "muscle index, area and radiation attenuation based on computed tomography imaging "
            "in a healthy Caucasian population. Eur J Clin Nutr. 2018;72(2):288-296."
        ),
        doi="10.1038/s41430-017-0034-5",
        population="420 healthy Caucasian adults (potential kidney donors), the Netherlands",
        smi_cutoffs=(
            Cutoff(41.6, "cm²/m²", sex="M"),
            Cutoff(32.0, "cm²/m²", sex="F"),
        ),
        muscle_hu_cutoffs=(
            Cutoff(29.3, "HU", sex="M"),
            Cutoff(22.0, "HU", sex="F"),
        ),
        muscle_area_cutoffs=(
            Cutoff(134.0, "cm²", sex="M"),
            Cutoff(89.2, "cm²", sex="F"),
        ),
        notes=(
            "Overall sex-specific 5th percentiles; the paper also gives age- and BMI-specific "
            "percentiles that are not used here.",
            "The scans came from kidney-donor screening, which as far as we know is "
            "contrast-enhanced CT: contrast raises muscle HU by a few HU (see docs/baseline.md).",
        ),
    ),
}

#: Reference used when the user does not choose one.
DEFAULT_REFERENCE = "martin2013"


@dataclass(frozen=True)
class FlagResult:
    """The flags that could be evaluated, and why the others could not."""

    flags: tuple[Flag, ...]
    not_evaluated: tuple[str, ...]


def get_reference(key: str) -> Reference:
    """Look a reference up by key; an unknown key is a user error naming the known keys."""
    try:
        return REFERENCES[key]
    except KeyError:
        known = ", ".join(sorted(REFERENCES))
        raise ConfigError(
            f"unknown cut-off reference {key!r}; choose one of: {known}"
        ) from None


def _apply(
    name: str,
    ref: Reference,
    cutoffs: tuple[Cutoff, ...],
    value: float | None,
    what: str,
    patient: PatientInfo,
) -> tuple[Flag | None, str | None]:
    """Evaluate one family of cut-offs; return (flag, None) or (None, reason)."""
    if not cutoffs:
        return None, f"{name}: {ref.name} defines no {what} cut-off"
    if value is None or not math.isfinite(value):
        return None, f"{name} ({ref.key}): {what} not available"
    sex_needed = any(c.sex is not None for c in cutoffs)
    bmi = patient.bmi
    if sex_needed and patient.sex is None:
        return None, f"{name} ({ref.key}): patient sex unknown; its cut-off is sex-specific"
    matching = [c for c in cutoffs if c.applies(patient.sex, bmi)]
    if not matching:
        needs_bmi = any(c.needs_bmi and (c.sex is None or c.sex == patient.sex) for c in cutoffs)
        if needs_bmi and bmi is None:
            return None, (f"{name} ({ref.key}): BMI unknown (needs height and weight); "
                          "its cut-off depends on BMI")
        return None, f"{name} ({ref.key}): no cut-off for this patient"
    cut = matching[0]
    flag = Flag(
        name=name,
        reference=ref.key,
        value=float(value),
        threshold=cut.threshold,
        unit=cut.unit,
        positive=cut.is_positive(float(value)),
    )
    return flag, None


def evaluate_flags(
    reference: str,
    patient: PatientInfo,
    *,
    smi_cm2_m2: float | None,
    muscle_area_cm2: float | None,
    muscle_mean_hu: float | None,
) -> FlagResult:
    """Apply a reference's cut-offs to one patient's measurements.

    Parameters
    ----------
    reference
        Key into :data:`REFERENCES`.
    patient
        Sex, height and weight (BMI) as known; missing fields are never guessed.
    smi_cm2_m2, muscle_area_cm2, muscle_mean_hu
        Measured skeletal muscle index (None without height), total muscle area and mean
        muscle attenuation.

    Returns
    -------
    FlagResult
        ``flags``: sarcopenia (SMI), myosteatosis (muscle HU) and, where the reference gives
        area percentiles, low muscle area (cm², usable without height); ``not_evaluated``: one
        reason per flag that could not be computed.
    """
    ref = get_reference(reference)
    flags: list[Flag] = []
    reasons: list[str] = []
    smi_value = smi_cm2_m2
    checks: list[tuple[str, tuple[Cutoff, ...], float | None, str]] = [
        (SARCOPENIA, ref.smi_cutoffs, smi_value, "skeletal muscle index (needs height)"),
        (MYOSTEATOSIS, ref.muscle_hu_cutoffs, muscle_mean_hu, "muscle attenuation"),
    ]
    if ref.muscle_area_cutoffs:
        checks.append((LOW_MUSCLE_AREA, ref.muscle_area_cutoffs, muscle_area_cm2, "muscle area"))
    for name, cutoffs, value, what in checks:
        if name == SARCOPENIA and cutoffs and smi_value is None and patient.height_m is None:
            reasons.append(f"{name} ({ref.key}): patient height unknown; SMI needs height")
            continue
        flag, reason = _apply(name, ref, cutoffs, value, what, patient)
        if flag is not None:
            flags.append(flag)
        elif reason is not None:
            reasons.append(reason)
    return FlagResult(tuple(flags), tuple(reasons))
