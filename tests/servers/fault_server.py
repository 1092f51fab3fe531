"""A loopback OpenAI-compatible server that fails on cue: the fault instrument for the `openai` engine.

It answers `GET /v1/models` and `POST /v1/chat/completions` on 127.0.0.1 (FastAPI + uvicorn in a
background thread, or a process: `python -m tests.servers.fault_server --latency-s 0.2 --capacity 64`).
A test scripts what the next chat requests get, in arrival order:

    server.script(status(500), status(500), ok())   # then the default: `ok()` for every request

Outcomes: `ok` (the echo answer, or a fixed text), `status` (any code, optional Retry-After and
body), `hang` (no answer until the client gives up), `malformed` (a 200 whose body is not JSON),
`empty` (content ""), `no_choices` (a 200 without "choices"). The echo answer of choice k is
`echo k: <last text of the chat>`, so a test can tell which answer went with which request.

Every request is recorded (arrival and answer times on `time.monotonic()`, parsed body, headers,
outcome), and the server keeps the peak number of chat requests in flight. `capacity` bounds how many
are processed at once; the excess waits ("queue") or gets 429 ("429", with a Retry-After).
"""

import argparse
import asyncio
import json
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from tests.servers.threaded import Running, serve_in_thread


@dataclass(frozen=True)
class Outcome:
    kind: str                       # ok, status, hang, malformed, empty, no_choices
    status: int = 200
    text: str | None = None         # ok: a fixed reply for every choice; None: the echo answer
    body: str | None = None         # status, malformed: the raw body sent
    retry_after: str | None = None  # status: the Retry-After header (seconds or an HTTP date)
    latency_s: float | None = None  # None: the server's latency
    finish_reason: str = "stop"


def ok(text: str | None = None, *, latency_s: float | None = None) -> Outcome:
    return Outcome("ok", text=text, latency_s=latency_s)


def status(code: int, *, retry_after: str | None = None, body: str | None = None, latency_s: float | None = None) -> Outcome:
    default = json.dumps({"error": {"message": f"fault server: scripted {code}", "type": "fault", "code": code}})
    return Outcome("status", status=code, retry_after=retry_after, body=body if body is not None else default,
                   latency_s=latency_s)


def hang(seconds: float = 30.0) -> Outcome:
    """No answer for `seconds`, or until the client disconnects."""
    return Outcome("hang", latency_s=seconds)


def malformed(body: str = '{"id": "chatcmpl-x", "choices": [{"index": 0, "message": {"content": "tru') -> Outcome:
    return Outcome("malformed", body=body)


def empty(finish_reason: str = "stop") -> Outcome:
    return Outcome("empty", finish_reason=finish_reason)


def no_choices() -> Outcome:
    return Outcome("no_choices")


def echo_answer(chat: dict, k: int = 0) -> str:
    """The `ok` reply for choice k of a chat request body: its last text, numbered."""
    last = ""
    for message in chat.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            last = content
        elif isinstance(content, list):
            last = next((p["text"] for p in reversed(content) if p.get("type") == "text"), last)
    return f"echo {k}: {last}"


@dataclass
class Recorded:
    path: str
    arrived_s: float                # time.monotonic() at arrival
    body: dict | None
    headers: dict
    outcome: str = ""
    status: int = 0
    answered_s: float = 0.0         # when the answer was sent (0 while in flight)


@dataclass
class _Settings:
    latency_s: float = 0.0
    capacity: int | None = None
    over_capacity: str = "queue"    # "queue": wait for a slot; "429": refuse with Retry-After
    default: Outcome = field(default_factory=ok)
    over_capacity_retry_after: str = "1"


class FaultServer:
    def __init__(self, *, model: str = "fault-model", root: str = "fault-org/fault-model", latency_s: float = 0.0,
                 capacity: int | None = None, over_capacity: str = "queue", port: int = 0):
        self.model, self.root, self.port = model, root, port
        self._settings = _Settings(latency_s, capacity, over_capacity)
        self._script: deque[Outcome] = deque()
        self._lock = threading.Lock()
        self.log: list[Recorded] = []
        self.in_flight = self.max_in_flight = 0
        self._slots: asyncio.Semaphore | None = None
        self._running: Running | None = None

    # --- scripting (from the test's thread) ---------------------------------------------------------

    def script(self, *outcomes: Outcome) -> None:
        """Queue outcomes for the next chat requests, in arrival order."""
        with self._lock:
            self._script.extend(outcomes)

    def reset(self, *, latency_s: float = 0.0, capacity: int | None = None, over_capacity: str = "queue",
              default: Outcome | None = None, over_capacity_retry_after: str = "1") -> None:
        """Forget the script and the log; set latency, capacity and the outcome when the script is empty."""
        with self._lock:
            self._script.clear()
            self.log = []
            self.max_in_flight = self.in_flight
            self._settings = _Settings(latency_s, capacity, over_capacity, default or ok(), over_capacity_retry_after)
            self._slots = None  # rebuilt on the server's loop at the next request

    @property
    def requests(self) -> list[Recorded]:
        """Chat completion requests, in arrival order."""
        return [r for r in self.log if r.path.endswith("/chat/completions")]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- serving ------------------------------------------------------------------------------------

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models(request: Request) -> Response:
            self.log.append(Recorded("/v1/models", time.monotonic(), None, dict(request.headers), "ok", 200, time.monotonic()))
            data = [{"id": self.model, "object": "model", "created": 0, "owned_by": "fault-server", "root": self.root,
                     "parent": None}]
            return Response(json.dumps({"object": "list", "data": data}), media_type="application/json")

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            record = Recorded("/v1/chat/completions", time.monotonic(), body, dict(request.headers))
            self.log.append(record)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                response = await self._answer(request, body or {}, record)
            finally:
                self.in_flight -= 1
            record.status, record.answered_s = response.status_code, time.monotonic()
            return response

        return app

    async def _answer(self, request: Request, body: dict, record: Recorded) -> Response:
        settings = self._settings
        with self._lock:
            outcome = self._script.popleft() if self._script else settings.default
        record.outcome = outcome.kind
        if settings.capacity is None:
            return await self._play(request, body, outcome, settings)
        if self._slots is None:
            self._slots = asyncio.Semaphore(settings.capacity)
        if settings.over_capacity == "429" and self._slots.locked():
            record.outcome = "over_capacity"
            return Response(json.dumps({"error": {"message": "over capacity"}}), 429,
                            {"Retry-After": settings.over_capacity_retry_after}, media_type="application/json")
        async with self._slots:
            return await self._play(request, body, outcome, settings)

    async def _play(self, request: Request, body: dict, outcome: Outcome, settings: _Settings) -> Response:
        latency = settings.latency_s if outcome.latency_s is None else outcome.latency_s
        if outcome.kind == "hang":
            deadline = time.monotonic() + latency
            while time.monotonic() < deadline and not await _disconnected(request):
                await asyncio.sleep(0.02)
            return Response(b"", 504)
        if latency:
            await asyncio.sleep(latency)
        if outcome.kind == "status":
            headers = {"Retry-After": outcome.retry_after} if outcome.retry_after is not None else {}
            return Response(outcome.body, outcome.status, headers, media_type="application/json")
        if outcome.kind == "malformed":
            return Response(outcome.body, 200, media_type="application/json")
        completion = {"id": f"chatcmpl-{len(self.log)}", "object": "chat.completion", "created": int(time.time()),
                      "model": body.get("model", self.model)}
        if outcome.kind != "no_choices":
            n = int(body.get("n") or 1)
            texts = ["" if outcome.kind == "empty" else outcome.text if outcome.text is not None else echo_answer(body, k)
                     for k in range(n)]
            completion["choices"] = [{"index": k, "message": {"role": "assistant", "content": text},
                                      "finish_reason": outcome.finish_reason} for k, text in enumerate(texts)]
            prompt_tokens = len(json.dumps(body.get("messages", [])).split())
            completion_tokens = sum(len(t.split()) for t in texts)
            completion["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                   "total_tokens": prompt_tokens + completion_tokens}
        return Response(json.dumps(completion), 200, media_type="application/json")

    def start(self) -> "FaultServer":
        self._running = serve_in_thread(self.app(), name="fault-server", port=self.port, backlog=4096, timeout_keep_alive=30)
        self.port = self._running.port
        return self

    def stop(self) -> None:
        if self._running is not None:
            self._running.stop()
            self._running = None

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


async def _disconnected(request: Request) -> bool:
    try:
        return await request.is_disconnected()
    except Exception:  # noqa: BLE001 (the connection is gone already, however it went)
        return True


def closed_port_url() -> str:
    """A base URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# --- pytest fixtures: import them into a test module (`from tests.servers.fault_server import ...`) ---


@pytest.fixture(scope="module")
def fault_server_module():
    with FaultServer() as server:
        yield server


@pytest.fixture
def fault_server(fault_server_module) -> FaultServer:
    """The module's fault server, with an empty script and log, no latency and no capacity limit."""
    fault_server_module.reset()
    return fault_server_module


@pytest.fixture(scope="module")
def fault_server_b_module():
    with FaultServer() as server:
        yield server


@pytest.fixture
def fault_server_b(fault_server_b_module) -> FaultServer:
    """A second fault server (another port), for load balancing across base URLs."""
    fault_server_b_module.reset()
    return fault_server_b_module


def main(argv: list[str] | None = None) -> None:
    """Serve in the foreground (a process of its own, e.g. for a benchmark) until stdin closes or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=None)
    parser.add_argument("--over-capacity", choices=["queue", "429"], default="queue")
    args = parser.parse_args(argv)
    server = FaultServer(latency_s=args.latency_s, capacity=args.capacity, over_capacity=args.over_capacity,
                         port=args.port).start()
    print(f"READY {server.url}", flush=True)
    try:
        sys.stdin.read()  # the parent closes our stdin (or kills us) to stop the server
    except KeyboardInterrupt:
        pass
    server.stop()


if __name__ == "__main__":
    main()
