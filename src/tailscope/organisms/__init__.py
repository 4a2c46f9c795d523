"""Model organisms: small real model pairs with planted rare behaviours and exact ground truth.

``load(name)`` returns an :class:`Organism` (its ``pair``, ``prompts``, ``ground_truth``,
``judge_spec``); ``list_organisms()`` names the shipped ones. The recipes that build them live in
this package too (``corpus``, ``world``, ``train``, ``groundtruth``, ``build``), so that
``tailscope organisms build NAME`` reproduces the shipped files from fixed seeds.
"""

from .groundtruth import PrefixRates, opening_regex, prefix_rates, starts_with_any
from .registry import DATA_DIR, Organism, OrganismNotFoundError, list_organisms, load

__all__ = [
    "DATA_DIR",
    "Organism",
    "OrganismNotFoundError",
    "PrefixRates",
    "list_organisms",
    "load",
    "opening_regex",
    "prefix_rates",
    "starts_with_any",
]
