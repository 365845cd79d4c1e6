"""Hostile Q-table files and rows: one QTableError naming the file (and line), never a silent drop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tryage import QTable, QTableError
from tryage.errors import TryageFileNotFoundError

GOOD = [{"prompt": "p1", "losses": {"a": 0.1, "b": 0.2}}, {"prompt": "p2", "losses": {"a": 0.3, "b": 0.1}}]


def jsonl(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


BAD_JSONL = [
    # (file content, line, text the message must contain)
    (jsonl([GOOD[0], {"prompt": "p2", "losses": {"a": None}}]), 2, "no observed loss"),
    (jsonl([GOOD[0], {"prompt": "p2", "losses": {"a": None, "b": None}}]), 2, "no observed loss"),
    (jsonl([{"prompt": "p", "losses": {"a": float("nan"), "b": 1}}]), 1, "values must be finite"),
    (jsonl(['{"prompt": "p", "losses": {"a": NaN, "b": 1}}']), 1, "values must be finite"),
    (jsonl(['{"prompt": "p", "losses": {"a": 1e400, "b": 1}}']), 1, "values must be finite"),
    (jsonl(['{"prompt": "p", "losses": {"a": ' + "9" * 400 + ', "b": 1}}']), 1, "is not a finite number"),
    (jsonl([{"prompt": "p", "losses": {"a": "low", "b": 1}}]), 1, "'low'"),
    (jsonl([{"prompt": "p", "losses": {"a": [1], "b": 1}}]), 1, "[1]"),
    (jsonl([GOOD[0], GOOD[0]]), 2, "duplicate prompt (first seen on line 1)"),
    (jsonl([{"prompt": "  ", "losses": {"a": 1}}]), 1, "empty or missing 'prompt'"),
    (jsonl([{"prompt": 5, "losses": {"a": 1}}]), 1, "empty or missing 'prompt'"),
    (jsonl([{"losses": {"a": 1}}]), 1, "empty or missing 'prompt'"),
    (jsonl([{"prompt": "p", "losses": [0.1, 0.2]}]), 1, "must be a non-empty object"),
    (jsonl([{"prompt": "p", "losses": {}}]), 1, "must be a non-empty object"),
    (jsonl([{"prompt": "p", "losses": {"a": 1}, "scores": {"a": 1}}]), 1, "exactly one of 'losses' or 'scores'"),
    (jsonl([{"prompt": "p"}]), 1, "exactly one of 'losses' or 'scores'"),
    (jsonl([GOOD[0], {"prompt": "q", "scores": {"a": 1, "b": 0}}]), 2, "one table holds one kind"),
    (jsonl(["[" * 100_000]), 1, "nested too deeply"),
    (jsonl(["[1, 2]"]), 1, "expected a JSON object, got list"),
    (jsonl(["{not json"]), 1, "not valid JSON"),
    (jsonl(['{"prompt": "\\ud800", "losses": {"a": 1}}']), 1, "lone surrogate"),
    ("\0\0\0\0\n", 1, "NUL bytes"),
]


@pytest.mark.parametrize(("content", "line", "shown"), BAD_JSONL, ids=[s[:30] for _, _, s in BAD_JSONL])
def test_bad_jsonl_rows_name_the_file_the_line_and_the_problem(tmp_path: Path, content: str, line: int,
                                                               shown: str) -> None:
    path = tmp_path / "table.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(QTableError) as info:
        QTable.from_file(path)
    assert type(info.value) is QTableError
    message = str(info.value)
    assert message.startswith(f"{path}, line {line}: ")
    assert shown in message and "\n" not in message
    assert info.value.path == str(path) and info.value.line == line


def test_a_column_first_seen_after_row_one_is_kept_as_unobserved_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "table.jsonl"
    path.write_text(jsonl([GOOD[0], {"prompt": "p2", "losses": {"a": 0.3, "b": 0.1, "c": 0.5}}, GOOD[1]
                           | {"prompt": "p3"}]), encoding="utf-8")
    table = QTable.from_file(path)
    assert table.experts == ("a", "b", "c") and table.prompts == ("p1", "p2", "p3") and not table.dropped
    assert table.observed[:, 2].tolist() == [False, True, False] and table.losses[1, 2] == 0.5
    assert table.n_missing == 2
    chosen = QTable.from_file(path, experts=["a", "b"])  # naming the columns leaves 'c' out, by request
    assert chosen.experts == ("a", "b") and chosen.prompts == ("p1", "p2", "p3")


ENCODINGS = [
    ("latin-1", lambda text: text.encode("latin-1"), "is not UTF-8 text (byte b'\\xe9'"),
    ("utf-16", lambda text: text.encode("utf-16"), "looks like UTF-16"),
    ("binary", lambda text: bytes(range(128, 256)) * 4, "is not UTF-8 text"),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize(("name", "encode", "shown"), ENCODINGS, ids=[e[0] for e in ENCODINGS])
def test_a_file_that_is_not_utf8_is_one_error_naming_it_and_what_is_allowed(tmp_path: Path, suffix: str, name: str,
                                                                            encode, shown: str) -> None:  # noqa: ANN001
    text = '{"prompt": "café", "losses": {"a": 1}}\n' if suffix == ".jsonl" else "prompt,loss:a\ncafé,1\n"
    path = tmp_path / f"table{suffix}"
    path.write_bytes(encode(text))
    with pytest.raises(QTableError) as info:
        QTable.from_file(path)
    assert type(info.value) is QTableError
    message = str(info.value)
    assert message.startswith(f"{path}: ") and shown in message
    assert "a Q-table is a UTF-8 .jsonl or .csv file" in message


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("prompt,loss:a,loss:b\nhé,0.1,0.2\n".encode("utf-8-sig"))
    assert QTable.from_file(path).prompts == ("hé",)


@pytest.mark.parametrize(("name", "shown"), [
    ("folder.jsonl", "is a folder, not a file"),
    ("table.txt", "unsupported Q-table format '.txt'"),
    ("table", "unsupported Q-table format ''"),
])
def test_a_path_that_is_not_a_table_file_is_refused(tmp_path: Path, name: str, shown: str) -> None:
    path = tmp_path / name
    if name.startswith("folder"):
        path.mkdir()
    else:
        path.write_text(jsonl(GOOD), encoding="utf-8")
    with pytest.raises(QTableError, match=shown) as info:
        QTable.from_file(path)
    assert str(path) in str(info.value)


def test_a_missing_file_is_a_file_not_found_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TryageFileNotFoundError, match="nope.jsonl"):
        QTable.from_file(tmp_path / "nope.jsonl")


def test_an_empty_file_has_no_valid_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(QTableError, match="no valid rows"):
        QTable.from_file(path)


BAD_CSV = [
    ("text,loss:a\nx,1\n", 1, "needs a 'prompt' column"),
    ("prompt,loss:a,score:b\nx,1,2\n", 1, "all be 'loss:<expert>' or all 'score:<expert>'"),
    ("prompt,a,b\nx,1,2\n", 1, "all be 'loss:<expert>'"),
    ("prompt,loss:a\nx,1,2,3\n", 2, "row has 4 cells but the header has 2"),
    ("prompt,loss:a,loss:b\nx,1\n", 2, "fewer cells than the 3 of the header"),
    ("prompt,loss:a\nx,\n", 2, "no observed loss"),
    ("prompt,loss:a\nx,inf\n", 2, "values must be finite"),
]


@pytest.mark.parametrize(("content", "line", "shown"), BAD_CSV, ids=[s[:30] for _, _, s in BAD_CSV])
def test_bad_csv_names_the_file_the_line_and_the_problem(tmp_path: Path, content: str, line: int, shown: str) -> None:
    path = tmp_path / "table.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(QTableError) as info:
        QTable.from_file(path)
    assert str(info.value).startswith(f"{path}, line {line}: ") and shown in str(info.value)


def test_a_csv_with_nul_bytes_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_bytes(b"prompt,loss:a\nx\0y,1\n")
    with pytest.raises(QTableError, match="line 2: holds NUL bytes") as info:
        QTable.from_file(path)
    assert str(path) in str(info.value)


def test_a_table_with_infinite_losses_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QTableError, match="finite or NaN"):
        QTable(("p",), ("a",), [[math.inf]])


def test_unobserved_entries_are_left_out_when_written_and_read_back(tmp_path: Path) -> None:
    table = QTable(("p", "q"), ("a", "b"), [[math.nan, 0.5], [0.1, 0.2]])
    table.to_jsonl(tmp_path / "out.jsonl")
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])["losses"] == {"b": 0.5}
    back = QTable.from_file(tmp_path / "out.jsonl", experts=["a", "b"])
    assert back.observed.tolist() == [[False, True], [True, True]]


# -- properties -------------------------------------------------------------------------------------
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**500, 10**500),
                   st.text(max_size=5), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
rows = st.lists(st.one_of(
    st.fixed_dictionaries({"prompt": st.one_of(st.text(max_size=8), st.integers()),
                           "losses": st.dictionaries(st.sampled_from("abc"), values, max_size=3)}),
    st.fixed_dictionaries({"prompt": st.text(max_size=8),
                           "scores": st.dictionaries(st.sampled_from("abc"), values, max_size=3)}),
    st.dictionaries(st.text(max_size=6), values, max_size=3),
), max_size=6)


@settings(max_examples=300, deadline=None)
@given(rows, st.sampled_from(["raise", "drop"]))
def test_any_rows_give_a_finite_table_or_a_qtable_error(records: list, on_invalid: str) -> None:
    try:
        table = QTable.from_records(records, on_invalid=on_invalid)
    except QTableError:
        return
    assert table.losses.shape == (len(table.prompts), len(table.experts))
    observed = table.observed
    assert observed.any(axis=1).all()  # every row kept has at least one value
    assert all(abs(v) < math.inf for v in table.losses[observed])
    assert all(math.isnan(v) for v in table.losses[~observed])
    assert len(set(table.prompts)) == len(table.prompts)
    assert len(table.prompts) + len(table.dropped) <= len(records)
    if on_invalid == "raise":
        assert len(table.prompts) == len(records)  # nothing left out silently


@settings(max_examples=100, deadline=None)
@given(rows)
def test_any_rows_written_as_a_file_give_a_table_or_a_qtable_error(tmp_path_factory, records: list) -> None:  # noqa: ANN001
    path = tmp_path_factory.mktemp("q") / "table.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    try:
        table = QTable.from_file(path, on_invalid="drop")
    except QTableError as exc:
        assert str(path) in str(exc)
        return
    assert len(table.prompts) + len(table.dropped) == sum(1 for _ in records)
