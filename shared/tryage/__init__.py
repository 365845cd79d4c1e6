"""Tryage: route each prompt to the expert model best suited to it, under your constraints.

``import tryage`` is light: torch and transformers load only when a perceptive router is trained
or loaded.
"""

from tryage.constraints import Constraint, ConstraintSet, Cost, Filter, Recency, Size
from tryage.errors import (
    ExpertNotFoundError,
    FlagError,
    HubDiscoveryError,
    HubError,
    HubGatedRepoError,
    HubRepoNotFoundError,
    HubTimeoutError,
    HubUnavailableError,
    MissingMetadataError,
    NotFittedError,
    QTableError,
    RouterMismatchError,
    TryageError,
)
from tryage.experts import Expert, ExpertLibrary
from tryage.flags import FlagParser, strip_flags
from tryage.objective import ExpertScore, RoutingDecision
from tryage.qtable import QTable
from tryage.router import TryageRouter

__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - a module
    """``tryage.collect(prompts, experts, scorer=..., out=...)``, imported on first use (it loads asyncio)."""
    if name == "collect":
        import tryage.collect

        return tryage.collect
    raise AttributeError(f"module 'tryage' has no attribute {name!r}")


__all__ = [
    "Constraint",
    "ConstraintSet",
    "Cost",
    "Expert",
    "ExpertLibrary",
    "ExpertNotFoundError",
    "ExpertScore",
    "Filter",
    "FlagError",
    "FlagParser",
    "HubDiscoveryError",
    "HubError",
    "HubGatedRepoError",
    "HubRepoNotFoundError",
    "HubTimeoutError",
    "HubUnavailableError",
    "MissingMetadataError",
    "NotFittedError",
    "QTable",
    "QTableError",
    "Recency",
    "RouterMismatchError",
    "RoutingDecision",
    "Size",
    "TryageError",
    "TryageRouter",
    "__version__",
    "collect",
    "strip_flags",
]
