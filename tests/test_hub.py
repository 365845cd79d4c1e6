"""Expert discovery from Hub metadata, against a local HTTP server that speaks the Hub's API.

The real ``huggingface_hub.HfApi`` is pointed at :class:`hub_fake_server.FakeHub` (127.0.0.1,
random port), which serves the recorded responses in ``tests/fixtures/hub``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_fake_server import FakeHub  # noqa: E402

from tryage import Expert, ExpertLibrary, Recency, TryageRouter  # noqa: E402
from tryage.errors import (  # noqa: E402
    ConfigurationError,
    HubDiscoveryError,
    HubError,
    HubGatedRepoError,
    HubRepoNotFoundError,
    HubTimeoutError,
    HubUnavailableError,
    TryageError,
)
from tryage.hub import (  # noqa: E402
    EXPAND,
    HUB_CREATED_AT_FLOOR,
    HubClient,
    StaleMetadataWarning,
    discover_experts,
    from_hub,
)

TOKEN = "hf_tryageTestTokenDoNotLeak123"


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    """Hermetic: online unless a test says otherwise, no stored token, no user cache."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("TRYAGE_HUB_CACHE", raising=False)


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


@pytest.fixture
def client(hub, tmp_path):
    return HubClient(endpoint=hub.url, cache_dir=tmp_path / "cache", token=False)


def _info_requests(hub: FakeHub) -> int:
    return hub.count("/api/models/")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class FixedLosses:
    """A deterministic loss predictor: the same losses for every prompt."""

    def __init__(self, losses: dict[str, float]) -> None:
        self.losses = losses

    @property
    def experts(self) -> tuple[str, ...]:
        return tuple(self.losses)

    def predict_losses(self, prompts):
        return np.tile(np.array(list(self.losses.values())), (len(prompts), 1))


# -- import weight -------------------------------------------------------------------------------
def test_import_tryage_hub_does_not_import_huggingface_hub():
    code = ("import sys, tryage, tryage.hub, tryage.cli.discover; "
            "print('huggingface_hub' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- fields --------------------------------------------------------------------------------------
def test_from_hub_fills_metadata_fields_from_model_info(client, hub):
    library = from_hub(["roberta-base", "meta-llama/Llama-3.2-1B"], client=client)
    roberta, llama = library["roberta-base"], library["meta-llama/Llama-3.2-1B"]
    assert library.names == ("roberta-base", "meta-llama/Llama-3.2-1B")
    assert roberta.repo_id == "FacebookAI/roberta-base"  # the Hub redirected the legacy id
    assert roberta.parameters == 124_697_433
    assert roberta.created_at == HUB_CREATED_AT_FLOOR
    assert roberta.last_modified.isoformat() == "2024-02-19T12:39:28+00:00"
    assert (roberta.license, roberta.pipeline_tag, roberta.library_name) == ("mit", "fill-mask", "transformers")
    assert (roberta.downloads, roberta.likes, roberta.gated) == (9_312_786, 514, False)
    assert "license:mit" in roberta.tags and "fill-mask" in roberta.tags
    assert (llama.parameters, llama.license, llama.gated) == (1_235_814_400, "llama3.2", True)
    asked = [r.query.get("expand") for r in hub.requests if r.path.startswith("/api/models/")]
    assert all(sorted(a) == sorted(EXPAND) for a in asked)


def test_from_hub_counts_parameters_from_safetensors_header(client, hub):
    [record] = client.fetch(["tryage-fixtures/tiny-header-only"])
    # 100*16 + 16*16 + 16 + 2*16 values in the fixture's header
    assert record.expert.parameters == 1904
    assert record.parameters_source == "safetensors header"
    assert hub.count("/tryage-fixtures/tiny-header-only/resolve/main/model.safetensors") >= 1


def test_from_hub_counts_parameters_from_config_json(client, hub):
    pytest.importorskip("transformers")
    [record] = client.fetch(["microsoft/codebert-base"])
    assert record.parameters_source == "config.json"
    assert record.expert.parameters == 124_645_632  # RobertaModel, roberta-base sized: the known count


def test_from_hub_leaves_parameters_unknown_without_countable_files(client, hub):
    [record] = client.fetch(["tryage-fixtures/gguf-only"])
    assert record.expert.parameters is None
    assert record.parameters_source == "unknown"
    assert hub.count("/tryage-fixtures/") == 0  # nothing to count from: no file was requested


def test_from_hub_revision_uses_the_revision_path(hub, tmp_path):
    client = HubClient(endpoint=hub.url, cache_dir=tmp_path, token=False, revision="main")
    [record] = client.fetch(["HuggingFaceTB/SmolLM2-135M"])
    assert record.expert.parameters == 134_515_008
    assert hub.count("/api/models/HuggingFaceTB/SmolLM2-135M/revision/main") == 1


# -- cache ---------------------------------------------------------------------------------------
def test_cache_second_fetch_makes_no_request(hub, tmp_path):
    ids = ["roberta-base", "HuggingFaceTB/SmolLM2-135M"]
    first = from_hub(ids, endpoint=hub.url, cache_dir=tmp_path, token=False)
    before = len(hub.requests)
    records = HubClient(endpoint=hub.url, cache_dir=tmp_path, token=False).fetch(ids)
    assert len(hub.requests) == before
    assert all(r.from_cache and not r.stale for r in records)
    assert ExpertLibrary(r.expert for r in records) == first


def test_cache_expires_after_ttl_and_refresh_fetches_again(hub, tmp_path):
    ids = ["HuggingFaceTB/SmolLM2-135M"]
    HubClient(endpoint=hub.url, cache_dir=tmp_path, token=False).fetch(ids)
    HubClient(endpoint=hub.url, cache_dir=tmp_path, token=False, ttl=3600).fetch(ids)
    assert _info_requests(hub) == 1
    HubClient(endpoint=hub.url, cache_dir=tmp_path, token=False, ttl=0).fetch(ids)
    assert _info_requests(hub) == 2
    HubClient(endpoint=hub.url, cache_dir=tmp_path, token=False).fetch(ids, refresh=True)
    assert _info_requests(hub) == 3


def test_token_is_sent_but_never_written_to_the_cache(hub, tmp_path):
    client = HubClient(endpoint=hub.url, cache_dir=tmp_path, token=TOKEN)
    client.fetch(["roberta-base", "tryage-fixtures/tiny-header-only", "tryage-fixtures/gguf-only"])
    assert {r.authorization for r in hub.requests} == {f"Bearer {TOKEN}"}
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written
    assert not any(TOKEN.encode() in p.read_bytes() for p in written)
    assert TOKEN not in repr(client)


def test_cache_dir_defaults_under_hf_home(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    HubClient(endpoint=hub.url, token=False).fetch(["HuggingFaceTB/SmolLM2-135M"])
    assert list((tmp_path / "hf" / "tryage" / "hub").rglob("HuggingFaceTB--SmolLM2-135M.json"))


# -- offline -------------------------------------------------------------------------------------
def test_offline_mode_uses_cache_without_requests(hub, tmp_path, monkeypatch):
    ids = ["roberta-base", "HuggingFaceTB/SmolLM2-135M"]
    online = from_hub(ids, endpoint=hub.url, cache_dir=tmp_path, token=False)
    before = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = from_hub(ids, endpoint=hub.url, cache_dir=tmp_path, token=False)
    assert offline == online
    assert len(hub.requests) == before
    with pytest.warns(StaleMetadataWarning, match="roberta-base"):  # expired, but offline: still used
        from_hub(ids, endpoint=hub.url, cache_dir=tmp_path, token=False, ttl=0)
    assert len(hub.requests) == before


def test_offline_mode_without_cache_raises_unavailable(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE") as info:
        from_hub(["HuggingFaceTB/SmolLM2-135M"], endpoint=hub.url, cache_dir=tmp_path, token=False)
    assert info.value.repo_id == "HuggingFaceTB/SmolLM2-135M"
    assert isinstance(info.value, ConnectionError)
    assert hub.requests == []


def test_unreachable_hub_without_cache_raises_unavailable(tmp_path):
    with pytest.raises(HubUnavailableError, match="nothing is cached") as info:
        from_hub(["HuggingFaceTB/SmolLM2-135M"], endpoint=_closed_port_url(), cache_dir=tmp_path, token=False)
    assert info.value.repo_id == "HuggingFaceTB/SmolLM2-135M"


def test_unreachable_hub_falls_back_to_expired_cache_with_warning(tmp_path):
    with FakeHub() as server:
        url = server.url
        fresh = from_hub(["HuggingFaceTB/SmolLM2-135M"], endpoint=url, cache_dir=tmp_path, token=False)
    with pytest.warns(StaleMetadataWarning, match="SmolLM2-135M"):
        stale = from_hub(["HuggingFaceTB/SmolLM2-135M"], endpoint=url, cache_dir=tmp_path, token=False, ttl=0)
    assert stale == fresh


# -- search --------------------------------------------------------------------------------------
def test_search_follows_link_header_pagination(client, hub):
    library = discover_experts("bert", sort="downloads", limit=5, client=client)
    assert library.names == ("google-bert/bert-base-uncased", "distilbert/distilbert-base-uncased",
                             "FacebookAI/roberta-base", "google-bert/bert-large-uncased", "microsoft/codebert-base")
    pages = [r for r in hub.requests if r.path == "/api/models"]
    assert len(pages) == 3  # page size 2
    assert "cursor" not in pages[0].query and all("cursor" in p.query for p in pages[1:])
    assert pages[0].query["search"] == ["bert"] and pages[0].query["sort"] == ["downloads"]


def test_search_stops_paginating_at_limit(client, hub):
    library = discover_experts("bert", limit=3, client=client)
    assert len(library) == 3
    assert hub.count("/api/models", "GET") - _info_requests(hub) == 2


def test_search_filters_by_task_author_and_sort(client, hub):
    library = discover_experts(author="google-bert", pipeline_tag="fill-mask", sort="likes", client=client)
    assert library.names == ("google-bert/bert-base-uncased", "google-bert/bert-large-uncased")
    assert library["google-bert/bert-large-uncased"].parameters == 336_226_108
    query = hub.requests[0].query
    assert (query["author"], query["pipeline_tag"], query["sort"]) == (["google-bert"], ["fill-mask"], ["likes"])


def test_search_is_cached_and_works_offline(hub, tmp_path, monkeypatch):
    first = discover_experts("smol", endpoint=hub.url, cache_dir=tmp_path, token=False)
    before = len(hub.requests)
    assert discover_experts("smol", endpoint=hub.url, cache_dir=tmp_path, token=False) == first
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert discover_experts("smol", endpoint=hub.url, cache_dir=tmp_path, token=False) == first
    assert len(hub.requests) == before
    with pytest.raises(HubUnavailableError, match="not in the cache") as info:
        discover_experts("llama", endpoint=hub.url, cache_dir=tmp_path, token=False)
    assert info.value.repo_id is None


def test_search_rejects_unknown_sort_and_bad_limit(client):
    with pytest.raises(ConfigurationError, match="sort must be one of downloads, likes"):
        discover_experts("bert", sort="stars", client=client)
    with pytest.raises(ConfigurationError, match="limit must be a whole number >= 1, got 0"):
        discover_experts("bert", limit=0, client=client)


# -- errors --------------------------------------------------------------------------------------
def test_missing_repo_raises_repo_not_found(client):
    with pytest.raises(HubRepoNotFoundError, match="'nobody/no-such-model'.*does not exist") as info:
        from_hub(["nobody/no-such-model"], client=client)
    assert info.value.repo_id == "nobody/no-such-model"
    assert isinstance(info.value, LookupError) and isinstance(info.value, TryageError)


def test_gated_repo_files_raise_gated_error(client, hub):
    with pytest.raises(HubGatedRepoError, match="gated repository.*config.json") as info:
        client.fetch(["tryage-fixtures/gated-bin-only"])
    assert info.value.repo_id == "tryage-fixtures/gated-bin-only"
    assert isinstance(info.value, PermissionError)
    assert any(r.path.endswith("/resolve/main/config.json") for r in hub.requests)


def test_gated_repo_with_user_parameter_count_needs_no_files(client, hub):
    mine = [Expert("tryage-fixtures/gated-bin-only", parameters="110M")]
    library = from_hub(["tryage-fixtures/gated-bin-only"], overrides=mine, client=client)
    expert = library["tryage-fixtures/gated-bin-only"]
    assert (expert.parameters, expert.gated, expert.license) == (110_000_000, True, "other")
    assert not any("/resolve/" in r.path for r in hub.requests)


def test_slow_hub_raises_timeout(hub, tmp_path):
    hub.delays["HuggingFaceTB/SmolLM2-135M"] = 3.0
    client = HubClient(endpoint=hub.url, cache_dir=tmp_path, token=False, timeout=0.3)
    with pytest.raises(HubTimeoutError, match="did not answer within 0.3s") as info:
        client.fetch(["HuggingFaceTB/SmolLM2-135M"])
    assert info.value.repo_id == "HuggingFaceTB/SmolLM2-135M"
    assert isinstance(info.value, TimeoutError)


def test_several_failing_ids_are_all_reported(hub, tmp_path):
    hub.delays["HuggingFaceTB/SmolLM2-135M"] = 3.0
    client = HubClient(endpoint=hub.url, cache_dir=tmp_path, token=False, timeout=0.3)
    ids = ["nobody/missing", "roberta-base", "tryage-fixtures/gated-bin-only", "HuggingFaceTB/SmolLM2-135M"]
    with pytest.raises(HubDiscoveryError) as info:
        client.fetch(ids)
    error = info.value
    assert error.repo_ids == ("nobody/missing", "tryage-fixtures/gated-bin-only", "HuggingFaceTB/SmolLM2-135M")
    assert [type(e) for e in error.failures.values()] == [HubRepoNotFoundError, HubGatedRepoError, HubTimeoutError]
    assert all(name in str(error) for name in error.repo_ids) and "roberta-base" not in str(error)
    before = _info_requests(hub)
    client.fetch(["roberta-base"])  # the id that succeeded was cached
    assert _info_requests(hub) == before


def test_invalid_and_duplicate_ids_are_rejected_before_any_request(client, hub):
    with pytest.raises(ConfigurationError, match="invalid Hub repository ids: 'a b', 'x/y/z'"):
        client.fetch(["a b", "roberta-base", "x/y/z"])
    with pytest.raises(ConfigurationError, match="given twice: 'roberta-base'"):
        client.fetch(["roberta-base", "roberta-base"])
    with pytest.raises(ConfigurationError, match="no repository ids"):
        client.fetch([])
    assert hub.requests == []


def test_hub_errors_are_tryage_errors_with_repo_id():
    for cls in (HubRepoNotFoundError, HubGatedRepoError, HubTimeoutError, HubUnavailableError):
        error = cls("message", repo_id="owner/name")
        assert isinstance(error, HubError) and isinstance(error, TryageError) and error.repo_id == "owner/name"


# -- merging and persistence ---------------------------------------------------------------------
def test_user_values_override_hub_values_and_rename(client, hub, tmp_path):
    mine = ExpertLibrary([Expert("codebert", repo_id="microsoft/codebert-base", license="mit", parameters="125M",
                                 description="code search")])
    library = from_hub(["microsoft/codebert-base", "roberta-base"], overrides=mine, client=client)
    codebert = library["codebert"]
    assert library.names == ("codebert", "roberta-base")
    assert (codebert.license, codebert.parameters, codebert.description) == ("mit", 125_000_000, "code search")
    assert (codebert.downloads, codebert.pipeline_tag) == (412_093, "feature-extraction")  # from the Hub
    assert not any("/resolve/" in r.path for r in hub.requests)  # size known: config.json not fetched
    path = library.to_json(tmp_path / "experts.json")
    assert ExpertLibrary.from_json(path) == library


# -- routing on a discovered library -------------------------------------------------------------
def test_flags_route_on_a_discovered_library(client):
    ids = ["roberta-base", "HuggingFaceTB/SmolLM2-135M", "meta-llama/Llama-3.2-1B"]
    library = from_hub(ids, client=client)
    predictor = FixedLosses({"roberta-base": 0.9, "HuggingFaceTB/SmolLM2-135M": 0.7, "meta-llama/Llama-3.2-1B": 0.2})
    router = TryageRouter(predictor, library)
    assert router.route("Write a poem.").expert == "meta-llama/Llama-3.2-1B"
    assert router.route("Write a poem. [Flag: smallest model]").expert == "roberta-base"
    assert router.route("Write a poem. [Flag: most recent]").expert == "HuggingFaceTB/SmolLM2-135M"


def test_legacy_created_at_ties_and_last_modified_tells_apart(client):
    library = from_hub(["roberta-base", "google-bert/bert-large-uncased"], client=client)
    predictor = FixedLosses({"roberta-base": 0.5, "google-bert/bert-large-uncased": 0.4})
    # both report the Hub's floor createdAt: recency ties and the loss decides
    assert TryageRouter(predictor, library).route("x [Flag: most recent]").expert == "google-bert/bert-large-uncased"
    by_commit = TryageRouter(predictor, library, constraints=[Recency(date_field="last_modified")])
    assert by_commit.route("x [Flag: most recent]").expert == "roberta-base"


# -- CLI -----------------------------------------------------------------------------------------
def _cli(*argv: str):
    from tryage.cli.discover import register

    parser = argparse.ArgumentParser(prog="tryage")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["discover", *argv])


def test_cli_discover_prints_table(hub, tmp_path, capsys):
    args = _cli("roberta-base", "microsoft/codebert-base", "HuggingFaceTB/SmolLM2-135M",
                "--endpoint", hub.url, "--cache-dir", str(tmp_path))
    pytest.importorskip("transformers")
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["expert", "params", "params"]
    roberta = next(line for line in lines if line.startswith("roberta-base"))
    assert "125M" in roberta and "safetensors.total" in roberta and "<=2022-03-02" in roberta and "mit" in roberta
    assert "config.json" in next(line for line in lines if line.startswith("microsoft/codebert-base"))


def test_cli_discover_json_and_out_write_the_library_format(hub, tmp_path, capsys):
    out = tmp_path / "experts.json"
    args = _cli("--search", "bert", "--pipeline-tag", "fill-mask", "--limit", "3", "--json", "--out", str(out),
                "--endpoint", hub.url, "--cache-dir", str(tmp_path / "cache"))
    assert args.func(args) == 0
    printed = ExpertLibrary.from_dict(json.loads(capsys.readouterr().out))
    assert printed.names == ("google-bert/bert-base-uncased", "distilbert/distilbert-base-uncased",
                             "FacebookAI/roberta-base")
    assert ExpertLibrary.from_json(out) == printed


def test_cli_discover_rejects_bad_input(hub, tmp_path):
    with pytest.raises(ConfigurationError, match="nothing to discover"):
        args = _cli("--endpoint", hub.url)
        args.func(args)
    with pytest.raises(ConfigurationError, match="not both"):
        args = _cli("roberta-base", "--search", "bert", "--endpoint", hub.url)
        args.func(args)
    with pytest.raises(HubRepoNotFoundError):
        args = _cli("nobody/missing", "--endpoint", hub.url, "--cache-dir", str(tmp_path))
        args.func(args)


def test_progress_bar_shown_for_long_lists(hub, tmp_path, capsys):
    ids = ["roberta-base", "HuggingFaceTB/SmolLM2-135M", "meta-llama/Llama-3.2-1B",
           "google-bert/bert-base-uncased", "distilbert/distilbert-base-uncased"]
    HubClient(endpoint=hub.url, cache_dir=tmp_path, token=False, progress=True).fetch(ids)
    err = capsys.readouterr().err
    assert "Hub metadata" in err and "5/5" in err
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HubClient(endpoint=hub.url, cache_dir=tmp_path, token=False, progress=False).fetch(ids)
    assert capsys.readouterr().err == ""


def test_discovery_error_first_line_names_every_failing_id(client):
    with pytest.raises(HubDiscoveryError) as info:
        client.fetch(["nobody/a", "tryage-fixtures/gated-bin-only"])
    first_line = str(info.value).splitlines()[0]
    assert "'nobody/a' (repository not found)" in first_line
    assert "'tryage-fixtures/gated-bin-only' (gated repository)" in first_line


def test_tryage_cli_discover_exits_2_with_one_line_message(hub, tmp_path, capsys):
    cli = pytest.importorskip("tryage.cli")
    code = cli.main(["discover", "nobody/a", "nobody/b", "--endpoint", hub.url, "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "'nobody/a' (repository not found)" in err[0] and "'nobody/b'" in err[0]
