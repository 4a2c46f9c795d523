"""Abliteration: build the less-safe variant of a safety-tuned model (METHODS.md §4).

``abliterate(lm, harmful, harmless, out)`` finds the refusal direction (Arditi et al. 2024),
removes it from every weight that writes into the residual stream and saves a normal checkpoint
with an ``abliteration.json`` card. The pieces are public too: :func:`find_refusal_direction`,
:func:`ablate_direction` (inference-time, with hooks), :func:`orthogonalize_weights` (in place).
"""

from ._abliterate import CARD_NAME, AbliterationResult, abliterate, save_abliterated
from ._activations import first_token_logprobs, mean_activations, opening_logprobs, post_instruction_length
from ._arch import ResidualLayout, UnsupportedArchitectureError, Writer, residual_layout
from ._edit import WeightEdit, ablate_direction, orthogonalize_weights, untie_output_embedding
from ._prompts import HARMFUL, HARMLESS, harmful_prompts, harmless_prompts
from ._scoring import (
    REFUSAL_OPENINGS,
    SampledCheck,
    harmless_kl,
    log_odds,
    opening_token_ids,
    refusal_scores,
    refusal_token_ids,
    sampled_check,
)
from ._search import (
    Candidate,
    DirectionSearch,
    NoCandidateError,
    SearchOptions,
    find_refusal_direction,
    refusal_score,
)

__all__ = [
    "CARD_NAME",
    "HARMFUL",
    "HARMLESS",
    "REFUSAL_OPENINGS",
    "AbliterationResult",
    "Candidate",
    "DirectionSearch",
    "NoCandidateError",
    "ResidualLayout",
    "SampledCheck",
    "SearchOptions",
    "UnsupportedArchitectureError",
    "WeightEdit",
    "Writer",
    "ablate_direction",
    "abliterate",
    "find_refusal_direction",
    "first_token_logprobs",
    "harmful_prompts",
    "harmless_kl",
    "harmless_prompts",
    "log_odds",
    "mean_activations",
    "opening_logprobs",
    "opening_token_ids",
    "orthogonalize_weights",
    "post_instruction_length",
    "refusal_score",
    "refusal_scores",
    "refusal_token_ids",
    "residual_layout",
    "sampled_check",
    "save_abliterated",
    "untie_output_embedding",
]
