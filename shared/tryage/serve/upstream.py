"""The experts' endpoints: OpenAI-compatible chat completions, called as is with ``model`` replaced.

An entry of the experts file (``tryage collect``'s format, :class:`~tryage.collect.backends.ExpertSpec`)
is served when it names an OpenAI-compatible endpoint: ``"model": "openai:<id>"`` (with or without
``model_kwargs.base_url``), any provider with a ``base_url``, or a provider below that speaks the
OpenAI protocol at a known address. The request body the client sent is forwarded unchanged but for
``model`` (and Tryage's own ``tryage`` field), so tools, structured output and every sampling field
reach the expert; the entry's generation settings (``temperature`` ...) fill in only what the client
left out. Keys come from the environment (``api_key_env`` or the provider's variable) and stay here:
:class:`Upstream` keeps its headers out of ``repr`` and no error repeats an expert's 401 body.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tryage.collect.entries import KEY_VARIABLES, TRANSPORT_KEYS, ExpertSpec
from tryage.collect.retry import RetryPolicy
from tryage.errors import ExpertSpecError, MissingCredentialsError, UpstreamError

#: Providers that speak the OpenAI protocol, and where, when the entry gives no ``base_url``.
OPENAI_COMPATIBLE = {"openai": "https://api.openai.com/v1", "groq": "https://api.groq.com/openai/v1",
                     "together": "https://api.together.xyz/v1", "deepseek": "https://api.deepseek.com/v1",
                     "fireworks": "https://api.fireworks.ai/inference/v1", "xai": "https://api.x.ai/v1"}
#: Statuses worth another attempt (then the next expert).
#: Statuses that blame the request itself: relayed to the client, no fallback.
CLIENT_FAULT = frozenset({400, 413, 422})


@dataclass(frozen=True)
class Upstream:
    """One expert's endpoint.

    Attributes:
        name: The expert's name (a router expert).
        url: Its ``.../chat/completions`` address.
        model: The model id sent upstream.
        defaults: Generation settings from the entry, used where the request sets none.
        concurrency: Calls in flight at once (``None``: the server's default).
        input_cost: USD per 1M input tokens, or ``None``.
        output_cost: USD per 1M output tokens, or ``None``.
        timeout: The entry's own timeout in seconds, or ``None`` (the server's).
        system_prompt: The entry's system message, put before the client's messages, or ``None``.
    """

    name: str
    url: str
    model: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    concurrency: int | None = None
    input_cost: float | None = None
    output_cost: float | None = None
    timeout: float | None = None
    system_prompt: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_spec(cls, spec: ExpertSpec) -> Upstream:
        """The endpoint of an experts-file entry, or an :class:`ExpertSpecError` saying why it cannot be served."""
        kwargs = dict(spec.model_kwargs)
        base_url = kwargs.get("base_url") or kwargs.get("openai_api_base")
        if spec.kind != "chat" or (base_url is None and spec.provider not in OPENAI_COMPATIBLE):
            raise ExpertSpecError(f"expert {spec.name!r}: tryage serve forwards to OpenAI-compatible endpoints; give "
                                  "'model': '<provider>:<id>' with model_kwargs.base_url (vLLM, Ollama, llama.cpp, "
                                  f"LiteLLM, ...) or one of the providers {', '.join(OPENAI_COMPATIBLE)}")
        base_url = str(base_url or OPENAI_COMPATIBLE[spec.provider or ""]).rstrip("/")
        variable = spec.api_key_env or KEY_VARIABLES.get(spec.provider or "")
        key = os.environ.get(variable) if variable else None
        if not key and (spec.api_key_env or spec.base_url is None):
            raise MissingCredentialsError(spec.name, variable or "OPENAI_API_KEY")  # a local server may need none
        headers = {str(k): str(v) for k, v in (kwargs.get("default_headers") or {}).items()}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        timeout = kwargs.get("timeout", kwargs.get("request_timeout"))
        defaults = {k: v for k, v in kwargs.items() if k not in TRANSPORT_KEYS and k not in ("model_name", "extra_body")}
        defaults.update(kwargs.get("extra_body") or {})   # LangChain's extra fields are the body's own fields here
        return cls(spec.name, f"{base_url}/chat/completions", spec.model.split(":", 1)[1],  # type: ignore[union-attr]
                   defaults, spec.concurrency, spec.input_cost, spec.output_cost,
                   float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None, spec.system_prompt,
                   headers)

    def body(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """What this expert receives: the client's body with its own ``model``, defaults where unset."""
        out = {**self.defaults, **{k: v for k, v in request.items() if k != "tryage"}}
        out["model"] = self.model
        if self.system_prompt is not None and isinstance(out.get("messages"), list):
            out["messages"] = [{"role": "system", "content": self.system_prompt}, *out["messages"]]
        return out

    def cost(self, usage: Mapping[str, Any] | None) -> tuple[int, int, float]:
        """``(input tokens, output tokens, USD)`` of an answer's ``usage`` (zeros when absent)."""
        usage = usage if isinstance(usage, Mapping) else {}
        tokens_in = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
        tokens_out = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else 0
        usd = (tokens_in * (self.input_cost or 0.0) + tokens_out * (self.output_cost or 0.0)) / 1e6
        return tokens_in, tokens_out, usd


def _error_of(upstream: Upstream, status: int, raw: bytes, retry_after: str | None) -> UpstreamError:
    if status in (401, 403):  # the server's own key: never relay the body (it may echo part of the key)
        return UpstreamError(upstream.name, f"refused the server's credentials (HTTP {status})", status=status)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    message = body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
    text = str(message or raw[:200].decode("utf-8", "replace") or "no body")
    return UpstreamError(upstream.name, f"HTTP {status}: {text}", status=status, retry_after=retry_after,
                         body=body if status in CLIENT_FAULT and isinstance(body, dict) else None)


def may_fall_back(error: UpstreamError) -> bool:
    """A failure the next expert may not share (not a request the client got wrong)."""
    return error.status not in CLIENT_FAULT


class Caller:
    """Calls endpoints through one ``httpx.AsyncClient``: a timeout, retries with backoff, SSE streams.

    Args:
        client: The shared HTTP client (connection pooling).
        timeout: Seconds for an answer (a stream: for its first event, then between events).
        retries: Further attempts after a 429, 5xx, timeout or refused connection.
        backoff: Seconds before the first retry, doubling after each (with jitter; an expert's
            ``Retry-After`` wins when longer): collect's one :class:`~tryage.collect.retry.RetryPolicy`.
    """

    def __init__(self, client: Any, *, timeout: float, retries: int, backoff: float) -> None:
        self.client = client
        self.timeout = timeout
        self.policy = RetryPolicy(retries, backoff, max_wait=30.0)

    async def complete(self, upstream: Upstream, body: Mapping[str, Any]) -> dict[str, Any]:
        """The expert's JSON answer to ``body`` (``stream`` off)."""

        async def attempt() -> dict[str, Any]:
            response = await self._send(upstream, body)
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
            try:
                answer = json.loads(raw)
            except ValueError:
                raise UpstreamError(upstream.name, "answered with something that is not JSON", status=502) from None
            if not isinstance(answer, dict):
                raise UpstreamError(upstream.name, "answered with JSON that is not an object", status=502)
            return answer

        return await self._with_retries(upstream, attempt)

    async def stream(self, upstream: Upstream, body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], AsyncIterator[Any], Any]:
        """Open a stream: ``(first events, the rest, response)``, once the first event has come.

        A stream that sends no event within the timeout counts as a failed attempt (retried, then
        the caller falls back); after the first event, events are relayed as they come.
        """

        async def attempt() -> tuple[list[dict[str, Any]], AsyncIterator[Any], Any]:
            response = await self._send(upstream, body)
            events = sse_events(response.aiter_lines())
            try:
                first = await asyncio.wait_for(events.__anext__(), self._limit(upstream))
            except (asyncio.TimeoutError, StopAsyncIteration, Exception) as exc:
                await response.aclose()
                if isinstance(exc, UpstreamError):
                    raise
                what = ("sent no event within " f"{self._limit(upstream):g} s") if isinstance(exc, asyncio.TimeoutError) \
                    else "ended its stream before any event" if isinstance(exc, StopAsyncIteration) \
                    else f"broke its stream before any event ({type(exc).__name__})"
                raise UpstreamError(upstream.name, what) from None
            return [first], events, response

        return await self._with_retries(upstream, attempt)

    def _limit(self, upstream: Upstream) -> float:
        return upstream.timeout or self.timeout

    async def _send(self, upstream: Upstream, body: Mapping[str, Any]) -> Any:
        import httpx

        limit = self._limit(upstream)
        request = self.client.build_request("POST", upstream.url, json=upstream.body(body), headers=dict(upstream.headers),
                                            timeout=httpx.Timeout(limit, connect=min(limit, 10.0)))
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            raise UpstreamError(upstream.name, f"did not answer within {limit:g} s") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(upstream.name, f"cannot be reached ({type(exc).__name__})") from None
        if response.status_code != 200:
            raw = await response.aread()
            await response.aclose()
            raise _error_of(upstream, response.status_code, raw, response.headers.get("retry-after"))
        return response

    async def _with_retries(self, upstream: Upstream, attempt: Any) -> Any:
        """``attempt()`` under the retry policy: 429, 5xx, timeouts and broken connections are retried."""
        import httpx

        async for retrying in self.policy.attempts():
            with retrying:
                try:
                    return await attempt()
                except httpx.HTTPError as exc:  # a read that timed out or broke while reading the body
                    raise UpstreamError(upstream.name, f"broke off its answer ({type(exc).__name__})") from None
        raise AssertionError("unreachable")  # pragma: no cover - the policy re-raises the last error


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of an OpenAI server-sent-event stream, until ``data: [DONE]``.

    Data lines that are not JSON objects are skipped; comments (keep-alives) and ``event:`` lines are
    ignored, as OpenAI's clients ignore them.
    """
    async for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            event = json.loads(payload)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


__all__ = ["CLIENT_FAULT", "OPENAI_COMPATIBLE", "Caller", "Upstream", "may_fall_back",
           "sse_events"]
