"""Expert discovery from Hugging Face Hub metadata.

Name the models you have, or search the Hub, and get an :class:`~tryage.ExpertLibrary` whose size,
dates, licence and popularity come from the Hub, so that ``[Flag: smallest model]`` and
``[Flag: most recent]`` work without typing a parameter count or a date::

    library = from_hub(["FacebookAI/roberta-base", "HuggingFaceTB/SmolLM2-135M"])
    library = discover_experts(search="bert", pipeline_tag="fill-mask", sort="downloads", limit=10)

Everything goes through ``huggingface_hub.HfApi`` (``model_info(expand=...)``, ``list_models``,
``get_safetensors_metadata``, ``hf_hub_download``), installed with ``pip install 'tryage[hub]'``.
``import tryage`` and ``import tryage.hub`` do not import ``huggingface_hub``; the first request does.

**Parameter count.** In this order: the Hub's ``safetensors.total``; the safetensors file headers
(``get_safetensors_metadata``, a few KB per file); the model's ``config.json``, built on PyTorch's
``meta`` device by the ``transformers`` class its ``architectures`` names (no weights are
downloaded or allocated; the count is what ``model.num_parameters()`` gives after loading). Custom
architectures (``trust_remote_code``) are never run. Otherwise the count stays unknown (``None``).
:attr:`HubRecord.parameters_source` says which one was used.

**Which date drives recency.** Both Hub dates are kept as the Hub reports them: ``created_at``
(``createdAt``, when the repository was created) and ``last_modified`` (``lastModified``, its last
commit). The ``recency`` constraint reads ``created_at`` by default, because a new commit (a README
fix) does not make a model new. The Hub started recording creation dates on 2022-03-02, so every
older model reports :data:`HUB_CREATED_AT_FLOOR`: for those, ``created_at`` is an upper bound and
they tie as the oldest. To tell legacy models apart, route with
``Recency(date_field="last_modified")``.

**Cache.** Each repository's metadata is stored as JSON under :func:`default_cache_dir` (one folder
per endpoint) and reused for ``ttl`` (7 days); ``refresh=True`` fetches again. With
``HF_HUB_OFFLINE=1`` cached metadata is used whatever its age and nothing is requested; when the Hub
cannot be reached, expired metadata is used with a :class:`~tryage.errors.StaleMetadataWarning`. A token is passed
to ``huggingface_hub`` only: it is never written to the cache, logged or put in a message.

Modules: :mod:`~tryage.hub.client` (requests), :mod:`~tryage.hub.cache` (the JSON cache),
:mod:`~tryage.hub._errors` (error translation), :mod:`~tryage.hub.parameters` (parameter counting),
:mod:`~tryage.hub.library` (libraries from records, with overrides).
"""

from tryage.errors import StaleMetadataWarning
from tryage.hub.cache import HubRecord, MetadataCache, default_cache_dir
from tryage.hub.client import DEFAULT_TTL, EXPAND, HUB_CREATED_AT_FLOOR, SORTS, HubClient, is_legacy_created_at
from tryage.hub.library import apply_overrides, discover_experts, from_hub, known_parameters, load_overrides
from tryage.hub.parameters import count_parameters_from_config

__all__ = [
    "DEFAULT_TTL", "EXPAND", "HUB_CREATED_AT_FLOOR", "SORTS", "HubClient", "HubRecord", "MetadataCache",
    "StaleMetadataWarning", "apply_overrides", "count_parameters_from_config", "default_cache_dir",
    "discover_experts", "from_hub", "is_legacy_created_at", "known_parameters", "load_overrides",
]
