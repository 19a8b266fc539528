"""Per-operation energy costs (pJ) for the arithmetic-only energy estimate.

The three presets are Horowitz's 45 nm figures (ISSCC 2014, "Computing's energy problem"), the
same numbers as SpikingJelly's `fp32()/fp16()/int8()` presets. A MAC is a multiply plus an add
(fp32: 3.7 + 0.9 pJ); an AC is an add alone. The spiking literature uses the fp32 pair.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, replace

from spikelm_core.errors import ConfigError

PJ_PER_MJ = 1e9
"""Picojoules per millijoule: energies are summed in pJ and reported in mJ."""

HOROWITZ_2014 = "Horowitz, ISSCC 2014, 45 nm"


@dataclass(frozen=True)
class CostProfile:
    """Energy of one multiply-accumulate (E_MAC) and one accumulate (E_AC), in picojoules."""

    name: str
    """Profile name, e.g. 'fp32'; overridden profiles get a '+custom' suffix."""
    e_mac_pj: float
    """Energy of one multiply-accumulate (a dense op with a float operand), pJ."""
    e_ac_pj: float
    """Energy of one accumulate (an op driven by a spike), pJ."""
    source: str
    """Where the numbers come from, printed in every report header."""

    def __post_init__(self) -> None:
        for field_name in ("e_mac_pj", "e_ac_pj"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{field_name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{field_name} must be a finite number > 0, got {value!r}")

    def with_overrides(self, *, e_mac_pj: float | None = None, e_ac_pj: float | None = None) -> "CostProfile":
        """This profile with E_MAC and/or E_AC replaced (`--e-mac`, `--e-ac`); unchanged if both are None."""
        if e_mac_pj is None and e_ac_pj is None:
            return self
        changed = []
        if e_mac_pj is not None:
            changed.append(f"E_MAC={e_mac_pj:g} pJ")
        if e_ac_pj is not None:
            changed.append(f"E_AC={e_ac_pj:g} pJ")
        return replace(
            self,
            name=self.name if self.name.endswith("+custom") else f"{self.name}+custom",
            e_mac_pj=self.e_mac_pj if e_mac_pj is None else e_mac_pj,
            e_ac_pj=self.e_ac_pj if e_ac_pj is None else e_ac_pj,
            source=f"{self.source}; overridden: {', '.join(changed)}",
        )

    def describe(self) -> str:
        """One line for report headers: name, both costs and the source."""
        return f"{self.name}: E_MAC {self.e_mac_pj:g} pJ, E_AC {self.e_ac_pj:g} pJ ({self.source})"


FP32 = CostProfile("fp32", 4.6, 0.9, HOROWITZ_2014)
FP16 = CostProfile("fp16", 1.5, 0.4, HOROWITZ_2014)
INT8 = CostProfile("int8", 0.23, 0.03, HOROWITZ_2014)

PROFILES: dict[str, CostProfile] = {p.name: p for p in (FP32, FP16, INT8)}
DEFAULT_PROFILE = "fp32"


def get_profile(
    name: str = DEFAULT_PROFILE, *, e_mac_pj: float | None = None, e_ac_pj: float | None = None
) -> CostProfile:
    """The named cost profile, with optional E_MAC / E_AC overrides.

    Raises ConfigError (exit 2) for an unknown name (with a did-you-mean hint) or a bad override.
    """
    profile = PROFILES.get(name)
    if profile is None:
        close = difflib.get_close_matches(name, PROFILES, n=1)
        raise ConfigError(
            f"unknown energy profile '{name}'",
            details=[f"known profiles: {', '.join(PROFILES)}"],
            hint=f"did you mean '{close[0]}'?" if close else "use fp32 (the literature's default), fp16 or int8",
        )
    try:
        return profile.with_overrides(e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj)
    except ValueError as err:
        flag = "--e-mac" if "e_mac" in str(err) else "--e-ac"
        raise ConfigError(f"bad energy cost override: {err}", hint=f"give {flag} as a positive number of picojoules") from None
