"""LlamaIndex integration: route among query engines and retrievers with a Tryage router."""

from llamaindex_tryage.selector import TryageSelector, TryageSelectorResult, UnknownChoiceError

__all__ = ["TryageSelector", "TryageSelectorResult", "UnknownChoiceError"]
