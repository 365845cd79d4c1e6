"""tryage.conversation: blending a turn's decision with its context's, stickiness, the thread store."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from tryage import Expert, ExpertLibrary, Filter, TryageRouter
from tryage.conversation import ThreadStore, blend_decisions, stick
from tryage.errors import ConfigurationError, TryageError

LIB = ExpertLibrary([Expert("small", parameters="100M"), Expert("mid", parameters="1B"),
                     Expert("big", parameters="10B")])


class TablePredictor:
    """Losses read from the prompt: ``"0.3 0.5 0.2"`` -> small 0.3, mid 0.5, big 0.2."""

    experts = ("small", "mid", "big")

    def predict_losses(self, prompts):
        return np.array([[float(v) for v in p.split("[")[0].split()] for p in prompts])


ROUTER = TryageRouter(TablePredictor(), LIB)


def decision(losses: str, **kwargs):
    return ROUTER.route(losses, **kwargs)


def test_blend_decisions_mixes_losses_with_the_context_weight_and_chooses_again():
    turn, context = decision("0.6 0.5 0.9"), decision("0.1 0.9 0.9")
    assert turn.expert == "mid"
    blended = blend_decisions(turn, context, 0.25)
    assert [s.predicted_loss for s in blended.scores] == pytest.approx([0.475, 0.6, 0.9])
    assert [s.total for s in blended.scores] == pytest.approx([0.475, 0.6, 0.9])
    assert blended.expert == "small"
    assert (blended.prompt, blended.flags) == (turn.prompt, turn.flags)
    assert blend_decisions(turn, context, 0.0) is turn
    assert blend_decisions(turn, context, 1.0).expert == "small"


def test_blend_decisions_keeps_the_turns_penalties_and_filters():
    turn = decision("0.6 0.5 0.9 [Flag: size=0.2]", filters=[Filter(experts=("mid", "big"))])
    context = decision("0.1 0.1 0.9")
    blended = blend_decisions(turn, context, 0.5)
    by_name = {s.expert: s for s in blended.scores}
    assert by_name["big"].penalties == {"size": pytest.approx(0.2)}  # the largest expert: 0.2 x penalty 1
    assert by_name["big"].total == pytest.approx(0.9 + 0.2)
    assert by_name["mid"].total == pytest.approx(0.3 + by_name["mid"].penalties["size"])
    assert by_name["small"].predicted_loss == pytest.approx(0.35)
    assert not by_name["small"].eligible  # lowest blended total, but filtered out
    assert blended.expert == "mid" and blended.flags == ("size=0.2",)


def test_blend_decisions_rejects_a_bad_weight_or_other_experts():
    turn = decision("0.6 0.5 0.9")
    with pytest.raises(ConfigurationError, match=r"context_weight must be a number in \[0, 1\]; got 1.5"):
        blend_decisions(turn, turn, 1.5)
    reordered = dataclasses.replace(turn, scores=turn.scores[::-1])
    with pytest.raises(ConfigurationError, match="cannot blend decisions over different experts"):
        blend_decisions(turn, reordered, 0.5)


def test_stick_keeps_the_thread_unless_another_expert_wins_by_more_than_the_margin():
    fresh = decision("0.5 0.45 0.9")  # mid beats small by 0.05
    kept, what = stick(fresh, "small", margin=0.1)
    assert (kept.expert, what) == ("small", "kept")
    assert kept.scores == fresh.scores  # the trace still shows that mid scored better
    assert stick(fresh, "small", margin=0.01)[0].expert == "mid"
    assert stick(fresh, "small", margin=0.01)[1] == "switched"
    assert stick(fresh, "mid", margin=0.1) == (fresh, "kept")
    assert stick(fresh, None, margin=0.1) == (fresh, "new")


def test_stick_routes_afresh_on_flags_or_when_the_previous_expert_is_excluded():
    flagged = decision("0.5 0.45 0.9 [Flag: size=0.01]")
    assert stick(flagged, "small", margin=10.0) == (flagged, "switched")
    filtered = decision("0.5 0.45 0.9", filters=[Filter(experts=("mid", "big"))])
    assert stick(filtered, "small", margin=10.0) == (filtered, "switched")
    assert stick(decision("0.5 0.45 0.9"), "retired-expert", margin=10.0)[1] == "switched"


def test_stick_rejects_a_negative_margin():
    with pytest.raises(ConfigurationError, match="stickiness_margin must be a finite number >= 0.*got -0.1"):
        stick(decision("0.5 0.45 0.9"), "small", margin=-0.1)


def test_thread_store_forgets_the_least_recently_used_thread():
    store = ThreadStore(max_threads=2)
    store.set("a", "small")
    store.set("b", "mid")
    assert store.get("a") == "small"  # a is now the most recently used
    store.set("c", "big")
    assert ("a" in store, "b" in store, "c" in store) == (True, False, True)
    assert store.get("b") is None and len(store) == 2
    store.forget("a")
    assert store.get("a") is None


def test_thread_store_stays_bounded_under_concurrent_writers():
    store = ThreadStore(max_threads=50)

    def write(worker: int) -> None:
        for i in range(2000):
            store.set((worker, i), "small")
            store.get((worker, i - 1))

    workers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(store) == 50
    assert sum(((w, 1999) in store) for w in range(4)) >= 1


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_thread_store_rejects_a_bad_size(size):
    with pytest.raises(ConfigurationError, match=f"max_threads must be a positive integer; got {size!r}") as info:
        ThreadStore(max_threads=size)
    assert isinstance(info.value, (TryageError, ValueError))


_EXPLORATION = pytest.mark.skipif(
    "explored" not in {f.name for f in dataclasses.fields(type(ROUTER.route("0.1 0.2 0.3")))},
    reason="RoutingDecision.explored arrives with feedback exploration (issue 13)")


@_EXPLORATION
def test_an_explored_choice_survives_blending_and_stickiness():
    explored = dataclasses.replace(decision("0.6 0.5 0.9"), expert="big", explored=True)
    blended = blend_decisions(explored, decision("0.1 0.9 0.9"), 0.25)
    assert blended.expert == "big" and blended.scores[0].predicted_loss == pytest.approx(0.475)
    assert stick(explored, "mid", margin=10.0) == (explored, "switched")
