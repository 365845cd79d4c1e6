"""Per-prompt cost: output lengths learned from a Q-table's ``output_tokens`` steer ``cost`` / ``[Flag: cheapest]``.

The table is synthetic (the LLMRouter table has no token counts): a cheap model that writes essays
when asked for one, and a pricier terse model. The encoder is the real bundled MiniLM.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tryage import ExpertLibrary, QTable, TryageRouter
from tryage.errors import QTableError, TargetExistsError, TryageError
from tryage.predictors import KNNPredictor
from tryage.experts import Expert
from tryage.predictors.output_length import OutputLengthPredictor, output_tokens

TOPICS = ["the French revolution", "photosynthesis", "black holes", "the printing press", "volcanoes",
          "the Roman empire", "climate change", "the immune system", "jazz music", "the stock market",
          "ancient Egypt", "plate tectonics", "the internet", "honey bees", "the moon landing"]
LONG = [f"Write a detailed essay about {t}." for t in TOPICS]
SHORT = [f"In one word: is {t} a noun?" for t in TOPICS]
LIBRARY = ExpertLibrary([Expert("chatty-7b", parameters=7_000_000_000, input_cost=0.2, output_cost=0.2),
                         Expert("terse-70b", parameters=70_000_000_000, input_cost=0.9, output_cost=0.9)])


def _rows() -> list[dict]:
    rows = []
    for i, prompt in enumerate(LONG[:12] + SHORT[:12]):
        essay = prompt in LONG
        rows.append({"prompt": prompt, "scores": {"chatty-7b": 1.0, "terse-70b": 1.0},
                     "output_tokens": {"chatty-7b": 2000 + 10 * i if essay else 3,
                                       "terse-70b": 60 + i if essay else 2}})
    return rows


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> QTable:
    path = tmp_path_factory.mktemp("collect") / "collected.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()), encoding="utf-8")
    return QTable.from_file(path)


@pytest.fixture(scope="module")
def encode():
    from tryage.predictors import PerceptivePredictor

    return PerceptivePredictor(progress=False, layers="last").encode


def test_output_tokens_are_read_from_collected_rows(table: QTable) -> None:
    tokens = output_tokens(table)
    assert tokens.shape == (24, 2) and tokens[0].tolist() == [2000, 60] and tokens[-1].tolist() == [3, 2]
    flat = QTable(("hello", "bye"), ("a", "b"), np.zeros((2, 2)),
                  ({"output_tokens:a": "12"}, {"output_tokens:a": 7, "output_tokens:b": 9}))
    got = output_tokens(flat)  # one column per expert, as a CSV row's extras
    assert got[1].tolist() == [7, 9] and got[0, 0] == 12 and np.isnan(got[0, 1])


def test_bad_or_missing_token_counts_are_one_line_errors(table: QTable) -> None:
    bad = QTable(("p",), ("a",), np.zeros((1, 1)), ({"output_tokens": {"a": "many"}},))
    with pytest.raises(QTableError, match="output_tokens of 'a' is 'many'"):
        output_tokens(bad)
    plain = QTable(("p", "q"), ("a",), np.zeros((2, 1)))
    with pytest.raises(TryageError, match="no output_tokens"):
        OutputLengthPredictor(lambda p: np.ones((len(p), 3))).fit(plain)


@pytest.mark.slow
def test_predicted_length_follows_the_prompt_and_round_trips(table: QTable, encode, tmp_path: Path) -> None:
    lengths = OutputLengthPredictor(encode, alpha=1.0).fit(table)
    unseen = [LONG[13], SHORT[13]]
    tokens = lengths.predict_tokens(unseen)
    assert tokens[0, 0] > 10 * tokens[1, 0]  # the chatty model is predicted to write an essay when asked
    assert tokens[0, 0] > 5 * tokens[0, 1]  # and much more than the terse one
    loaded = OutputLengthPredictor.from_pretrained(lengths.save_pretrained(tmp_path / "len"), embed=encode)
    np.testing.assert_allclose(loaded.predict_tokens(unseen), tokens, rtol=1e-4)


@pytest.mark.slow
def test_cheapest_flag_uses_the_predicted_cost_of_this_prompt(table: QTable, encode) -> None:
    quality = KNNPredictor(encode, k=3).fit(table)  # both experts always succeed: cost alone decides
    lengths = OutputLengthPredictor(encode, alpha=1.0).fit(table)
    per_prompt = TryageRouter(quality, LIBRARY, output_lengths=lengths)
    per_token = TryageRouter(quality, LIBRARY)
    essay, short = LONG[14] + " [Flag: cheapest]", SHORT[14] + " [Flag: cheapest]"
    # Per token the 7B model is cheaper, so it wins both without the length model ...
    assert [d.expert for d in per_token.route_batch([essay, short])] == ["chatty-7b", "chatty-7b"]
    # ... but its essay costs more than the terse model's short answer at 4.5x the price.
    decisions = per_prompt.route_batch([essay, short])
    assert [d.expert for d in decisions] == ["terse-70b", "chatty-7b"]
    usd = lengths.predict_costs([LONG[14], SHORT[14]], LIBRARY)
    assert usd[0, 1] < usd[0, 0] and usd[1, 0] < usd[1, 1]
    # Without a cost weight the length model changes nothing.
    assert per_prompt.route(LONG[14]).expert == per_token.route(LONG[14]).expert


def test_output_lengths_save_atomically_as_the_router_does(table: QTable, tmp_path: Path) -> None:
    vectors = {p: v for p, v in zip(table.prompts, np.random.default_rng(0).normal(size=(len(table), 4)))}

    def embed(prompts):
        return np.array([vectors[p] for p in prompts])

    lengths = OutputLengthPredictor(embed, alpha=1.0, min_rows=2).fit(table)
    folder = lengths.save_pretrained(tmp_path / "len")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert lengths.save_pretrained(folder) == folder  # its own earlier save is replaced whole
    assert [p.name for p in tmp_path.iterdir()] == ["len"]  # no staging folder left behind
    loaded = OutputLengthPredictor.from_pretrained(folder, embed=embed)
    np.testing.assert_allclose(loaded.predict_tokens(table.prompts[:3]), lengths.predict_tokens(table.prompts[:3]),
                               rtol=1e-5)
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(TargetExistsError, match="refusing to save an output-length predictor to .*notes: it is a "
                                                "folder that is not a saved Tryage output-length predictor"):
        lengths.save_pretrained(mine)
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
