"""LangChain's standard unit tests for ChatTryage (``langchain_tests.unit_tests.ChatModelUnitTests``).

Two standard tests skip, because what they check does not exist for a router:

* ``test_init_from_env`` checks that credentials are read from environment variables. ChatTryage
  holds no credentials and reads nothing from the environment: its experts do, each with its own
  provider's variables.
* ``test_serdes`` checks LangChain JSON serialisation (``dumpd``/``load``). That format stores a
  model's constructor arguments as JSON; a ChatTryage's router is a trained network (weights, not
  JSON arguments), so ``ChatTryage.is_lc_serializable()`` is ``False``. Save the router with
  ``save_pretrained`` and the experts with LangChain's own serialisation instead.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_tests", reason="the standard tests need langchain-tests (dev extra)")

from langchain_fakes import EXPERTS, EchoChatModel, make_router  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from langchain_tryage import ChatTryage  # noqa: E402


class TestChatTryageStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatTryage]:
        return ChatTryage

    @property
    def chat_model_params(self) -> dict[str, Any]:
        router, _ = make_router()
        return {"router": router, "experts": {name: EchoChatModel(label=name) for name in EXPERTS}}

    @property
    def model_override_value(self) -> str:
        return "legal"
