"""An OpenAI-compatible chat-completions client (OpenAI, vLLM, llama.cpp server, Ollama, ...) as a chat backend.

The base URL and key come from the environment (``SSTKIT_OPENAI_BASE_URL``, else ``OPENAI_BASE_URL``, else
``https://api.openai.com/v1``; ``SSTKIT_OPENAI_API_KEY``, else ``OPENAI_API_KEY``), so no secret is ever in a
config file. Only the standard library is used. Failed requests (connection errors, time-outs, HTTP 429 and 5xx)
are retried with exponential back-off; other HTTP errors fail at once with the server's message.

Example:
    >>> client = OpenAIChatClient.from_env("gpt-4o-mini")  # doctest: +SKIP
    >>> client.generate(["Say hi."], GenerationSettings(max_new_tokens=8))[0].text  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from sstkit.errors import SstkitError
from sstkit.generation.base import Generation, GenerationSettings, Prompt, cut_at_stop, to_messages

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIChatClient:
    """Sends one ``POST {base_url}/chat/completions`` per prompt.

    Args:
        model: the server's model name.
        base_url: the API root (``.../v1``).
        api_key: sent as a bearer token when given.
        timeout: seconds per request.
        retries: extra attempts after a retryable failure.
        backoff: seconds before the first retry, doubled each time.
    """

    def __init__(self, model: str, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 1.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise SstkitError(f"OpenAI base URL must start with http:// or https://, got {base_url!r}")
        self.model, self.base_url, self.api_key = model, base_url.rstrip("/"), api_key
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.name = f"openai:{model}"

    @classmethod
    def from_env(cls, model: str, **kwargs: Any) -> OpenAIChatClient:
        """A client whose base URL and key come from the environment (see the module docstring)."""
        env = os.environ
        base_url = env.get("SSTKIT_OPENAI_BASE_URL") or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        api_key = env.get("SSTKIT_OPENAI_API_KEY") or env.get("OPENAI_API_KEY")
        return cls(model, base_url, api_key, **kwargs)

    def generate(
        self, prompts: Sequence[Prompt], settings: GenerationSettings | None = None, system: str | None = None
    ) -> list[Generation]:
        """One reply per prompt (sequential requests; the server batches on its side)."""
        settings = settings or GenerationSettings()
        return [self._one(to_messages(p, system), settings) for p in prompts]

    def _one(self, messages: list[dict[str, str]], settings: GenerationSettings) -> Generation:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": settings.max_new_tokens,
                                "temperature": settings.temperature, "seed": settings.seed}
        if settings.top_p < 1:
            body["top_p"] = settings.top_p
        if settings.stop:
            body["stop"] = list(settings.stop[:4])  # the API takes at most four
        reply = self._post("/chat/completions", body)
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise SstkitError(f"{self.base_url}: unexpected chat-completions reply {str(reply)[:200]!r}") from err
        text, stopped = cut_at_stop(text, settings.stop)  # servers that ignore `stop` (or the fifth string)
        reason = "stop" if stopped else {"length": "length"}.get(choice.get("finish_reason"), "eos")
        tokens = (reply.get("usage") or {}).get("completion_tokens", 0)
        return Generation(text, int(tokens), reason)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode())
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}: {err.read().decode(errors='replace')[:200]}"
                if err.code not in RETRY_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            except json.JSONDecodeError as err:
                last = f"reply is not JSON ({err})"
        raise SstkitError(f"{self.base_url}{path} failed after {attempt + 1} attempt(s): {last}")
