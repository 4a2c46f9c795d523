"""The default estimator: the configuration the benchmarks measure best (docs/estimators.md).

Switching path MIS (METHODS.md §2) with its switch point chosen by the cross-entropy search on a
calibration split of prompts. With too few prompts to set a split aside, the switch point falls
back to :data:`FALLBACK_SWITCH`: 8 tokens, what the search chose on the bundled ``refusal``
organisms at every reply length measured, whose behaviour is decided by an opening of 4–6 tokens.
A behaviour decided later in the reply needs a later switch; the estimate stays unbiased for any
switch point (only its variance depends on it), and its flags say when its weights degrade.
"""

from __future__ import annotations

from typing import Any

from .tuning import TUNE

__all__ = ["CALIBRATION_PROMPTS", "DEFAULT_METHOD", "FALLBACK_SWITCH", "default_settings", "min_prompts_to_tune"]

DEFAULT_METHOD = "mis"
FALLBACK_SWITCH = 8
CALIBRATION_PROMPTS = 4


def min_prompts_to_tune(calibration: int = CALIBRATION_PROMPTS) -> int:
    """The fewest prompts for which the default sets ``calibration`` aside: as many left to score."""
    return 2 * calibration


def default_settings(prompts: int, calibration: int = CALIBRATION_PROMPTS) -> tuple[dict[str, Any], str]:
    """The default method's settings for a run of ``prompts`` prompts, and a sentence saying which.

    Tuned on a calibration split when there are at least :func:`min_prompts_to_tune` prompts,
    else the fixed switch point.
    """
    if prompts >= min_prompts_to_tune(calibration):
        return {"switch_after": TUNE}, (f"switching path MIS, switch point tuned on {calibration} calibration "
                                        "prompts (not scored)")
    return {"switch_after": FALLBACK_SWITCH}, (
        f"switching path MIS with the fixed switch point {FALLBACK_SWITCH} (only {prompts} prompts: tuning needs "
        f"{min_prompts_to_tune(calibration)}, half of them set aside)")
