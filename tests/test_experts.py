from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from tryage import Expert, ExpertLibrary, ExpertNotFoundError, TryageError
from tryage.errors import ExpertLibraryError
from tryage.experts import format_size, parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("7B", 7_000_000_000), ("135M", 135_000_000), ("1.5b", 1_500_000_000), ("8x7B", 56_000_000_000),
    (4_400_000, 4_400_000), (None, None), ("", None),
])
def test_parse_size_reads_common_spellings(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["seven", "7Q", -3, 0, True])
def test_parse_size_rejects_nonsense_with_the_allowed_forms(bad):
    with pytest.raises(ExpertLibraryError, match="7B|positive|number"):
        parse_size(bad)


def test_format_size_is_readable():
    assert format_size(7_000_000_000) == "7B"
    assert format_size(135_000_000) == "135M"
    assert format_size(None) == "?"


def test_library_reads_llmrouter_models_json_shape():
    data = {"qwen2.5-7b-instruct": {"size": "7B", "feature": "multilingual", "input_price": 0.2,
                                    "output_price": 0.3, "model": "qwen/qwen2.5-7b-instruct", "service": "NVIDIA"}}
    lib = ExpertLibrary.from_dict(data)
    expert = lib["qwen2.5-7b-instruct"]
    assert expert.parameters == 7_000_000_000
    assert expert.cost == pytest.approx(0.25)
    assert expert.description == "multilingual"
    assert expert.created_at is None  # unknown stays unknown


def test_library_reads_the_shared_models_json(llmrouter_dir):
    lib = ExpertLibrary.from_json(llmrouter_dir / "models.json")
    assert len(lib) == 14
    assert lib["llama3-70b-instruct"].parameters == 70_000_000_000


def test_library_round_trips_through_json(tmp_path):
    lib = ExpertLibrary([Expert("a", parameters="1B", created_at="2024-05-01", tags=("code",)),
                         Expert("b", license="mit", last_modified="2024-06-01T12:00:00Z")])
    path = lib.to_json(tmp_path / "lib.json")
    again = ExpertLibrary.from_json(path)
    assert again == lib
    assert again["a"].created_at == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert json.loads(path.read_text())["format_version"] == 1


def test_library_rejects_duplicates_unknown_fields_and_bad_versions(tmp_path):
    with pytest.raises(ExpertLibraryError, match="duplicate expert name 'a'"):
        ExpertLibrary([Expert("a"), Expert("a")])
    with pytest.raises(ExpertLibraryError, match="unknown field 'sise'"):
        ExpertLibrary.from_dict([{"name": "a", "sise": "7B"}])
    with pytest.raises(ExpertLibraryError, match="format_version 9"):
        ExpertLibrary.from_dict({"format_version": 9, "experts": []})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ExpertLibraryError, match="not valid JSON"):
        ExpertLibrary.from_json(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        ExpertLibrary.from_json(tmp_path / "missing.json")


def test_library_unknown_name_lists_the_experts():
    lib = ExpertLibrary.from_names(["a", "b"])
    with pytest.raises(ExpertNotFoundError, match="unknown expert 'c'; the library holds: 'a', 'b'") as info:
        lib["c"]
    assert isinstance(info.value, KeyError) and isinstance(info.value, TryageError)


def test_library_merge_prefers_user_values_and_fills_gaps():
    hub = ExpertLibrary([Expert("a", parameters="1B", license="mit", downloads=10)])
    mine = [Expert("a", license="apache-2.0")]
    merged = hub.merge(mine)
    assert merged["a"].license == "apache-2.0"
    assert merged["a"].parameters == 1_000_000_000
    assert merged["a"].downloads == 10
