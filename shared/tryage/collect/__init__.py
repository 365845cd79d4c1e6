"""``tryage collect``: call your models on your prompts, score the answers, write a Q-table.

    import tryage.collect
    result = tryage.collect("prompts.jsonl", "experts.json", scorer="exact", out="qtable.jsonl", budget=2.0)

Then ``tryage train --qtable qtable.jsonl --experts qtable.experts.json --out router/`` and route
with ``ChatTryage(router=..., experts=build_chat_models("experts.json"))``. LangChain is imported
only when a chat-model expert is built.
"""

import sys as _sys
import types as _types
from typing import Any as _Any

from tryage.collect.backends import ExpertSpec, build_chat_models, load_experts
from tryage.collect.calllog import CallLog, CallRecord
from tryage.collect.pipeline import CollectResult, DryRun, acollect, collect, score
from tryage.collect.prompts import PromptRow, load_prompts
from tryage.collect.runner import PlannedCall
from tryage.collect.scorers import Judge, Scorer, get_scorer

__all__ = ["CallLog", "CallRecord", "CollectResult", "DryRun", "ExpertSpec", "Judge", "PlannedCall", "PromptRow",
           "Scorer", "acollect", "build_chat_models", "collect", "get_scorer", "load_experts", "load_prompts", "score"]


class _CallableModule(_types.ModuleType):
    """``tryage.collect(...)`` is :func:`collect`, as the module's name promises."""

    def __call__(self, *args: _Any, **kwargs: _Any) -> _Any:
        return collect(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
