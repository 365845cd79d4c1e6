"""Tryage: route each prompt to the expert model best suited to it, under your constraints.

``import tryage`` is light: torch and transformers load only when a perceptive predictor is trained
or loaded. See ARCHITECTURE.md for the modules and what each owns.
"""

from tryage.constraints import Constraint, ConstraintSet, Cost, Filter, Recency, Size
from tryage._version import __version__
from tryage.errors import (
    ConfigurationError,
    EncoderLoadError,
    ExpertLibraryError,
    ExpertModelNotFoundError,
    ExpertNotFoundError,
    FlagError,
    HubDiscoveryError,
    HubError,
    HubGatedRepoError,
    HubRepoNotFoundError,
    HubTimeoutError,
    HubUnavailableError,
    MeasureError,
    MissingDependencyError,
    MissingMetadataError,
    NoEligibleExpertError,
    NotFittedError,
    OutputWriteError,
    QTableError,
    RouterFormatError,
    RouterMismatchError,
    StaleMetadataWarning,
    TargetExistsError,
    TryageError,
    TryageFileNotFoundError,
    UnknownConstraintError,
)
from tryage.experts import Expert, ExpertLibrary
from tryage.flags import FlagParser, strip_flags
from tryage.objective import ExpertScore, RoutingDecision
from tryage.predictors import LossPredictor, PerceptivePredictor
from tryage.qtable import QTable
from tryage.router import Router, TryageRouter

def __getattr__(name: str):  # noqa: ANN202 - a module
    """``tryage.collect(prompts, experts, scorer=..., out=...)``, imported on first use (it loads asyncio)."""
    if name == "collect":
        import tryage.collect

        return tryage.collect
    raise AttributeError(f"module 'tryage' has no attribute {name!r}")


__all__ = [
    "ConfigurationError",
    "Constraint",
    "ConstraintSet",
    "Cost",
    "EncoderLoadError",
    "Expert",
    "ExpertLibrary",
    "ExpertLibraryError",
    "ExpertModelNotFoundError",
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
    "LossPredictor",
    "MeasureError",
    "MissingDependencyError",
    "MissingMetadataError",
    "NoEligibleExpertError",
    "NotFittedError",
    "OutputWriteError",
    "PerceptivePredictor",
    "QTable",
    "QTableError",
    "Recency",
    "Router",
    "RouterFormatError",
    "RouterMismatchError",
    "RoutingDecision",
    "Size",
    "StaleMetadataWarning",
    "TargetExistsError",
    "TryageError",
    "TryageFileNotFoundError",
    "TryageRouter",
    "UnknownConstraintError",
    "__version__",
    "collect",
    "strip_flags",
]
