"""Conversation threads and the adapters' inputs on hostile values.

A thread id that cannot be hashed is one line; ids of different types are different threads (``True`` is
not ``1``); ``sticky`` takes a bool only. ``ChatTryage.invoke(None)`` and ``TryageSelector.select(None | 42)``
raise Tryage's :class:`~tryage.errors.ConfigurationError` (a ``ValueError``), not the framework's own error.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tryage.conversation import ThreadStore
from tryage.errors import ConfigurationError

HASHABLE_IDS = st.one_of(st.booleans(), st.integers(-3, 3), st.floats(-3, 3), st.text(max_size=3),
                         st.tuples(st.integers(0, 2)), st.none())


@settings(max_examples=200, deadline=None, database=None)
@given(first=HASHABLE_IDS, second=HASHABLE_IDS)
def test_thread_ids_of_different_type_or_value_are_different_threads(first, second) -> None:
    store = ThreadStore()
    store.set(first, "a")
    store.set(second, "b")
    same = type(first) is type(second) and first == second
    assert store.get(first) == ("b" if same else "a")
    assert len(store) == (1 if same else 2)


@pytest.mark.parametrize("thread", [["x"], {"a": 1}, {1}, ("x", ["y"]), bytearray(b"t")])
def test_a_thread_id_that_cannot_be_hashed_is_one_line(thread: object) -> None:
    store = ThreadStore()
    for action in (lambda: store.get(thread), lambda: store.set(thread, "a"), lambda: store.forget(thread),
                   lambda: thread in store):
        with pytest.raises(ConfigurationError, match="a conversation thread id must be hashable") as info:
            action()
        assert "\n" not in str(info.value) and type(thread).__name__ in str(info.value)


@pytest.fixture()
def chat(router):
    pytest.importorskip("langchain_core")
    from langchain_core.language_models import FakeListChatModel

    from langchain_tryage import ChatTryage

    experts = {name: FakeListChatModel(responses=[f"{name} answers"] * 20) for name in ("a", "b", "c")}
    return lambda **options: ChatTryage(router=router, experts=experts, **options)


def test_chat_tryage_keeps_true_and_1_on_threads_of_their_own(chat) -> None:
    model = chat(sticky=True)
    for thread in (True, 1, 1.0, "1"):
        assert model.invoke("hi", tryage_thread=thread).response_metadata["tryage_sticky"] == "new"
    assert model.invoke("hi again", tryage_thread=True).response_metadata["tryage_sticky"] == "kept"


@pytest.mark.parametrize("thread", [["x"], ("x", ["y"]), {"id": 1}])
def test_chat_tryage_refuses_an_unhashable_thread_id_before_routing(chat, thread: object) -> None:
    with pytest.raises(ConfigurationError, match="a conversation thread id must be hashable"):
        chat(sticky=True).invoke("hi", config={"configurable": {"thread_id": thread}})


@pytest.mark.parametrize("name", ["sticky", "fallback", "streaming"])
@pytest.mark.parametrize("value", ["yes", "no", 1, None])
def test_chat_tryage_switches_take_a_bool_only(chat, name: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=f"{name} must be True or False, got {value!r}"):
        chat(**{name: value})


@pytest.mark.parametrize("value", [None, 42, 4.5, [None], [42], {"role": "user"}])
def test_chat_tryage_invoke_of_a_non_input_is_tryages_configuration_error(chat, value: object) -> None:
    model = chat()
    for call in (model.invoke, lambda v: model.batch([v, "hi"])[0], lambda v: list(model.stream(v))):
        with pytest.raises(ConfigurationError) as info:
            call(value)
        assert type(info.value) is ConfigurationError and "\n" not in str(info.value)


@pytest.mark.parametrize(("choices", "query", "shown"), [
    (None, "hi", "choices must be a list of ToolMetadata or strings, got NoneType"),
    (42, "hi", "choices must be a list of ToolMetadata or strings, got int"),
    ("ab", "hi", "choices must be a list of ToolMetadata or strings, got str"),
    ([None], "hi", "choice 0 is NoneType"),
    (["a", 42], "hi", "choice 1 is int"),
    (["a", "b"], None, "query must be a string or a QueryBundle, got NoneType"),
    (["a", "b"], 42, "query must be a string or a QueryBundle, got int"),
])
def test_tryage_selector_select_of_a_non_input_is_tryages_configuration_error(router, choices, query, shown) -> None:
    pytest.importorskip("llama_index.core")
    import asyncio

    from llamaindex_tryage import TryageSelector

    selector = TryageSelector(router)
    for call in (selector.select, lambda c, q: asyncio.run(selector.aselect(c, q))):
        with pytest.raises(ConfigurationError) as info:
            call(choices, query)
        assert type(info.value) is ConfigurationError and str(info.value).startswith(shown)


@pytest.mark.parametrize("value", [None, 42, [None], [42]])
def test_router_chain_refuses_a_non_input_in_one_line(router, value: object) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.runnables import RunnableLambda

    from langchain_tryage import TryageRouterChain

    chain = TryageRouterChain(router=router, experts={n: RunnableLambda(lambda x, n=n: n) for n in ("a", "b", "c")})
    with pytest.raises(ConfigurationError) as info:
        chain.invoke(value)
    assert "\n" not in str(info.value) and "accepted: a string, a list of messages" in str(info.value)
