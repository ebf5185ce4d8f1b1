"""The OpenAI-compatible client against a stub server on 127.0.0.1: request shape, retries, time-outs, errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sstkit.errors import SstkitError
from sstkit.generation import GenerationSettings
from sstkit.generation.openai_client import OpenAIChatClient


class Stub(BaseHTTPRequestHandler):
    """Answers with the scripted statuses first, then a chat completion echoing the last user message."""

    script: list[int] = []
    seen: list[dict[str, Any]] = []
    delay: float = 0.0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Stub.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if Stub.delay:
            threading.Event().wait(Stub.delay)
        status = Stub.script.pop(0) if Stub.script else 200
        if status != 200:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b'{"error": "scripted"}')
            return
        text = "echo: " + body["messages"][-1]["content"] + " STOP tail"
        reply = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                 "usage": {"completion_tokens": 7}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    Stub.script, Stub.seen, Stub.delay = [], [], 0.0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_request_and_reply(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSTKIT_OPENAI_BASE_URL", server)
    monkeypatch.setenv("SSTKIT_OPENAI_API_KEY", "k-test")
    client = OpenAIChatClient.from_env("stub-model")
    out = client.generate(["hi", "there"], GenerationSettings(max_new_tokens=9, stop=(" STOP",)), system="be safe")
    assert [g.text for g in out] == ["echo: hi", "echo: there"]
    assert out[0].finish_reason == "stop" and out[0].new_tokens == 7
    first = Stub.seen[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer k-test"
    assert first["body"]["messages"][0] == {"role": "system", "content": "be safe"}
    assert first["body"]["max_tokens"] == 9 and first["body"]["temperature"] == 0.0


def test_retries_then_succeeds(server: str) -> None:
    Stub.script = [503, 429]
    client = OpenAIChatClient("m", server, retries=2, backoff=0.01)
    assert client.generate(["x"])[0].text.startswith("echo: x")
    assert len(Stub.seen) == 3


def test_gives_up_after_retries_and_on_client_errors(server: str) -> None:
    Stub.script = [500, 500, 500]
    with pytest.raises(SstkitError, match="after 3 attempt.*HTTP 500"):
        OpenAIChatClient("m", server, retries=2, backoff=0.01).generate(["x"])
    Stub.script, Stub.seen = [400], []
    with pytest.raises(SstkitError, match="after 1 attempt.*HTTP 400"):
        OpenAIChatClient("m", server, retries=2, backoff=0.01).generate(["x"])
    assert len(Stub.seen) == 1  # a bad request is not retried


def test_time_out_is_retried_then_reported(server: str) -> None:
    Stub.delay = 0.5
    with pytest.raises(SstkitError, match="after 2 attempt"):
        OpenAIChatClient("m", server, timeout=0.1, retries=1, backoff=0.01).generate(["x"])


def test_bad_base_url() -> None:
    with pytest.raises(SstkitError, match="http"):
        OpenAIChatClient("m", "127.0.0.1:8000")
