"""Any OpenAI-compatible chat server over HTTP (stdlib urllib), streamed; no KV reuse on our side.

The server applies its own chat template, so we send the same conversation text prompt.py renders
for local models. Timings are client-side: TTFT includes the network and the server's queue.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

from chronorag.kvcache.generator import (
    BackendUnavailable,
    CacheReport,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Generator,
    Timings,
    TokenEvent,
)
from chronorag.kvcache.prompt import PromptLayout, chat_messages


class OpenAIGenerator(Generator):
    backend = "openai"

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "default",
        api_key: str | None = None,
        timeout_s: float = 120.0,
        layout: PromptLayout | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise GenerationError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.layout = layout or PromptLayout()
        self.extra_body = dict(extra_body or {})

    def build_body(self, req: GenerationRequest) -> dict[str, Any]:
        msgs = chat_messages(req.system_prompt, [text for _, text in req.chunks], req.question, self.layout)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": msgs,
            "stream": True,
            "max_tokens": req.max_new_tokens,
            "temperature": req.temperature,
        }
        if req.seed is not None:
            body["seed"] = req.seed
        body.update(self.extra_body)
        return body

    def _open(self, body: dict[str, Any]):
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        http_req = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            return urllib.request.urlopen(http_req, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
            raise GenerationError(f"server at {self.base_url} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendUnavailable(f"cannot reach OpenAI-compatible server at {self.base_url}: {reason}") from None

    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent | GenerationResult]:
        t0 = time.perf_counter()
        req = request.validate()
        if req.mode not in (None, "full"):
            raise GenerationError(f"the openai backend has no KV reuse; mode {req.mode!r} is not available")
        timings = Timings()
        pieces: list[str] = []
        finish, n_events, usage = "length", 0, {}
        t_first = None
        with self._open(self.build_body(req)) as resp:
            for raw in resp:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except json.JSONDecodeError:
                    raise GenerationError(f"server sent a malformed stream event: {data[:80]!r}") from None
                usage = event.get("usage") or usage
                for choice in event.get("choices", []):
                    delta = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                    if choice.get("finish_reason"):
                        finish = "stop" if choice["finish_reason"] == "stop" else "length"
                    if delta:
                        if t_first is None:
                            t_first = time.perf_counter()
                            timings.ttft_s = timings.prefill_s = t_first - t0
                        pieces.append(delta)
                        n_events += 1
                        yield TokenEvent(delta, None)
        t_end = time.perf_counter()
        timings.total_s = t_end - t0
        timings.decode_s = t_end - (t_first or t_end)
        n_tokens = int(usage.get("completion_tokens") or n_events)
        if n_tokens > 1 and timings.decode_s > 0:
            timings.decode_tokens_per_s = (n_tokens - 1) / timings.decode_s
        report = CacheReport(mode="full", prompt_tokens=int(usage.get("prompt_tokens") or 0))
        yield GenerationResult("".join(pieces), [], finish, timings, report)
