"""The `openai` engine: any OpenAI-compatible server (vLLM, SGLang, Ollama, hosted APIs) through the
official `openai.AsyncOpenAI` client, at bounded concurrency over one or several base URLs.

`generate(requests)` is synchronous for the caller (stages run in Prefect worker threads) and async
inside: each engine owns one event loop in a daemon thread, which holds the clients, the per-endpoint
slots and pauses, and answers every caller's batch, so two threads may call `generate` at once and
share the same concurrency bound. A batch costs one thread hop (56 µs measured), not one per
request; `asyncio.run` per batch would cost more (133 µs) and reconnect every batch, since a client's
connections belong to one loop.

At start the engine asks every endpoint `GET /v1/models`: one that does not answer, refuses the key
or does not serve the model is left out (an unreachable one is tried again after 30 s); when none is
left, `EngineUnavailable` lists each URL with its problem and what to do.

One request is one HTTP call (`n=` completions: a GRPO group of G rollouts is one call). What
happens to it:
- a free slot on the endpoint with the fewest requests in flight (ties go round robin); an endpoint
  paused by a 429, or down after a connection error, is skipped while another is free;
- with `rpm`/`tpm`, a token bucket first (engine-wide, since hosted limits are per key): one second
  of the limit may burst; the token cost is estimated before the call (text/4 + ~1,000 per image
  + n·max_tokens) and corrected with the usage the server reports;
- 429: the endpoint's "resume at" time moves to now + Retry-After (seconds or an HTTP date, also
  `retry-after-ms`; else backoff), so no worker sends to it before then; then the request retries,
  on any endpoint. Counted apart from errors (`max_rate_limit_retries`);
- 5xx, 408, 409, timeouts and connection errors: retried up to `max_retries` times after a full-
  jitter exponential backoff, uniform(0, min(backoff_max_s, backoff_base_s·2^k)) (AWS
  "Exponential Backoff and Jitter", 2015); a connection error also marks the endpoint down that long;
- any other 4xx: no retry; an error response carrying the status and the server's message.

A failed call is never an exception: it is a `Response` whose `error` names what went wrong and the
endpoint (the stage rejects with it), and `transient` says whether asking again may help (timeouts,
5xx, 429, connection, malformed bodies, 401/403/404, which are the server's or the profile's fault;
not 400/413/422, empty or filtered completions, which the same call would get again).
A 200 is an answer only if its body is JSON with `n` choices whose contents are all non-empty:
invalid JSON or missing choices is "malformed response" with the raw body (cut at 2,000 chars), and
an empty content is "empty completion" with its finish_reason, since stages must never take "" for
an answer. A group with one empty rollout is therefore an error as a whole.

`response_schema` (guided JSON), per `guided_json`: "response_format" sends OpenAI's
`response_format={"type": "json_schema", ...}` (vLLM, SGLang and hosted APIs take it); "vllm" sends
vLLM's `structured_outputs={"json": schema}` (vLLM >= 0.10; `guided_json` before, removed in 0.12);
"auto" sends response_format and, if an endpoint answers 400 naming it, sends that endpoint's later
requests unguided (the stage's parser still validates); "off" never guides.

`model`: the profile's, or the first model the servers list at /v1/models. `revision`: the
profile's (set it to the weights' commit hash when you can), else the `root` that vLLM reports for
the model (its path or hub name), else "unversioned". Replicas that report different roots are
refused: their answers would share one call cache identity.

`Response.usage` holds the server's prompt_tokens and completion_tokens; `latency_s` runs from the
request's first send to its answer or final error, so retries and 429 pauses count, queueing before
the first send does not. `stats()` gives engine-wide and per-endpoint counters.
"""

import asyncio
import base64
import importlib.util
import inspect
import json
import logging
import math
import os
import queue
import random
import re
import threading
import time
import weakref
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from functools import lru_cache

import httpx2
import openai

from pipelines.engines.base import Request, Response, images_of, text_of
from schemas.errors import EngineUnavailable, RecipeError, did_you_mean

log = logging.getLogger(__name__)

GUIDED_JSON_MODES = ("auto", "response_format", "vllm", "off")
_RAW_CHARS = 2000          # raw body kept in an error message
_PROBE_TIMEOUT_S = 10.0    # the health probe at start
_DOWN_AT_START_S = 30.0   # an endpoint unreachable at start gets its first request after this
_MAX_PAUSE_S = 600.0       # a longer Retry-After (say, a date tomorrow) pauses this long
_IMAGE_TOKENS = 1000       # rpm/tpm estimate per image: OpenAI bills 85-1,105; Qwen2.5-VL ~ pixels/784
_GUIDANCE_WORDS = ("response_format", "json_schema", "structured", "guided")


@dataclass
class _Endpoint:
    url: str                         # base URL without credentials: safe in messages
    client: openai.AsyncOpenAI
    max_concurrency: int
    in_flight: int = 0
    paused_until: float = 0.0        # loop time; a 429's Retry-After
    down_until: float = 0.0          # loop time; after a connection error (inf: excluded at start)
    failures: int = 0                # consecutive connection errors
    rate_limits: int = 0             # consecutive 429s without Retry-After
    takes_response_format: bool = True
    counts: dict = field(default_factory=lambda: dict.fromkeys(
        ("calls", "answered", "failed", "retries", "rate_limited", "timeouts", "connection_errors", "max_in_flight"), 0))

    def blocked_until(self) -> float:
        return max(self.paused_until, self.down_until)


@dataclass
class _Outcome:
    """What one HTTP attempt came to."""

    kind: str                        # answered, retry, rate_limited, guided_rejected, failed
    texts: list[str] = field(default_factory=list)
    usage: dict = field(default_factory=dict)
    error: str = ""                  # what went wrong, e.g. "HTTP 503"
    detail: str = ""                 # the server's words or the raw body
    transient: bool = True
    retry_after_s: float | None = None


class OpenAICompatibleEngine:
    name = "openai"

    def __init__(self, model: str | None = None, *, base_url: str | list[str], api_key: str | None = None,
                 api_key_env: str | None = None, revision: str | None = None, max_concurrency: int = 16,
                 timeout_s: float = 120.0, max_retries: int = 4, max_rate_limit_retries: int = 20,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 30.0, rpm: int | None = None,
                 tpm: int | None = None, guided_json: str = "auto", extra_body: dict | None = None,
                 max_tokens_param: str = "max_tokens", http_client: str = "aiohttp", continue_final_message: bool = False,
                 jitter=random.random):
        """`base_url`: one URL or a list (replicas, load-balanced), each including `/v1`.

        `api_key_env`: the environment variable holding the key (preferred: `api_key` itself ends up
        wherever the profile is recorded); neither: "EMPTY", as vLLM expects. `max_concurrency`:
        requests in flight per endpoint. `timeout_s`: per HTTP attempt. `max_retries`: retries after
        errors (5xx, timeouts, connection), `max_rate_limit_retries` after 429s. `rpm`, `tpm`:
        engine-wide limits per minute. `extra_body`: merged into every request (e.g. vLLM's `top_k`,
        `chat_template_kwargs`). `max_tokens_param`: "max_completion_tokens" for OpenAI reasoning
        models. `http_client`: the client's transport, "httpx" (httpx2, pure Python) or "aiohttp" (needs
        `pip install "openai[aiohttp]"`; half the client CPU per call, measured: worth it past a few
        hundred requests a second). `continue_final_message`: the server continues a trailing assistant
        message when asked (vLLM and SGLang take `continue_final_message`; hosted APIs do not), so MCTS
        sends its steps so far as that message and the server's prefix cache reuses them; False: MCTS
        renders them into the user turn. `jitter`: the uniform [0, 1) draw of the backoff (tests pass a constant).
        """
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        problems = _check_options(urls, max_concurrency, guided_json, max_tokens_param, timeout_s, http_client)
        if problems:
            raise RecipeError("openai engine", problems)
        self.model = model
        self.max_concurrency, self.timeout_s, self.guided_json = max_concurrency, float(timeout_s), guided_json
        self.max_retries, self.max_rate_limit_retries = max_retries, max_rate_limit_retries
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.extra_body, self.max_tokens_param, self._jitter = dict(extra_body or {}), max_tokens_param, jitter
        self._options, self.http_client = {"timeout": self.timeout_s}, http_client
        self.continues_assistant_prefix = continue_final_message
        self._urls, self._api_key = urls, _api_key(api_key, api_key_env)
        self._rpm = _TokenBucket(rpm) if rpm else None
        self._tpm = _TokenBucket(tpm) if tpm else None
        self._counts = dict.fromkeys(("requests", "answered", "failed", "guided_fallbacks", "prompt_tokens",
                                      "completion_tokens"), 0)
        self._start()
        try:
            self.revision = self._run(self._check_endpoints(revision))
        except BaseException:
            self.close()
            raise

    # --- the caller's side (any thread) ---------------------------------------------------------------

    def generate(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        if self._pid != os.getpid():  # a forked worker: the loop thread did not come along
            self._start()
        return self._run(self._generate(list(requests)))

    def generate_iter(self, requests: list[Request]):
        """Yield (index, response) as each request finishes, in any order: a caller that stores answers
        as they come (the call cache) loses nothing already paid for when the process is killed."""
        if not requests:
            return
        if self._pid != os.getpid():
            self._start()
        finished: queue.Queue = queue.Queue()
        batch = asyncio.run_coroutine_threadsafe(self._generate(list(requests), on_done=finished.put), self._loop)
        for _ in range(len(requests)):
            while True:
                try:
                    yield finished.get(timeout=0.5)
                    break
                except queue.Empty:
                    if batch.done():
                        batch.result()  # raises what broke the batch
                        raise RuntimeError("openai engine: the batch ended without answering every request")

    def stats(self) -> dict:
        """Counters since the engine started: engine-wide, plus `endpoints` keyed by base URL."""
        return self._run(self._stats())

    def close(self) -> None:
        async def close_clients():
            for endpoint in self._endpoints:
                await endpoint.client.close()

        self._run(close_clients())
        self._finalizer.detach()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __repr__(self) -> str:
        return f"OpenAICompatibleEngine(model={self.model!r}, base_url={[e.url for e in self._endpoints]})"

    def _start(self) -> None:
        self._pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-engine", daemon=True)
        self._thread.start()
        self._finalizer = weakref.finalize(self, self._loop.call_soon_threadsafe, self._loop.stop)  # dropped unclosed
        previous = getattr(self, "_endpoints", None)
        self._endpoints = self._run(self._open_endpoints())
        if previous:  # after a fork: keep what was learnt about each endpoint
            for new, old in zip(self._endpoints, previous):
                new.down_until, new.takes_response_format = old.down_until, old.takes_response_format
        self._waiters: list[asyncio.Future] = []
        self._next = 0  # round-robin start for ties
        for bucket in (self._rpm, self._tpm):
            if bucket is not None:
                bucket.rebind()

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # --- start: clients and the health probe (on the loop) --------------------------------------------

    async def _open_endpoints(self) -> list[_Endpoint]:
        endpoints = []
        limits = httpx2.Limits(max_connections=self.max_concurrency + 4, max_keepalive_connections=self.max_concurrency)
        transport = openai.DefaultAioHttpClient if self.http_client == "aiohttp" else openai.DefaultAsyncHttpx2Client
        for url in self._urls:
            client = openai.AsyncOpenAI(base_url=url, api_key=self._api_key, max_retries=0, timeout=self.timeout_s,
                                        http_client=transport(limits=limits))
            endpoints.append(_Endpoint(_safe_url(url), client, self.max_concurrency))
        return endpoints

    async def _check_endpoints(self, revision: str | None) -> str:
        """GET /v1/models on every endpoint; mark the unreachable down; settle model and revision.

        Raises EngineUnavailable when no endpoint can serve (unreachable, key refused, model absent).
        """
        probes = await asyncio.gather(*(self._probe(e) for e in self._endpoints))
        problems, listings = [], {}
        now = asyncio.get_running_loop().time()
        for endpoint, (entries, problem) in zip(self._endpoints, probes):
            if problem:
                problems.append(problem)
                endpoint.failures, endpoint.down_until = 8, now + max(self.backoff_max_s, _DOWN_AT_START_S)
            else:
                listings[endpoint.url] = entries
        if not listings:
            raise EngineUnavailable(_unavailable_message(problems))
        if self.model is None:
            self.model = next((entries[0]["id"] for entries in listings.values() if entries), None)
            if self.model is None:
                raise EngineUnavailable(f"openai engine: no `model` in the profile, and {', '.join(listings)} list no "
                                        "models at /v1/models. Set `model:` in the model profile.")
        roots = {}
        for endpoint in self._endpoints:
            entries = listings.get(endpoint.url)
            if entries is None:
                continue
            entry = next((e for e in entries if e.get("id") == self.model), None)
            if entry is None:
                served = ", ".join(e.get("id", "?") for e in entries[:20])
                problems.append(f"{endpoint.url} does not serve model {self.model!r} (it serves: {served})")
                endpoint.down_until = math.inf
                del listings[endpoint.url]
            elif entry.get("root"):
                roots[endpoint.url] = entry["root"]
        if not listings:
            raise EngineUnavailable(_unavailable_message(problems))
        if len(set(roots.values())) > 1:
            raise EngineUnavailable(f"openai engine: the replicas of {self.model!r} serve different weights "
                                    f"({roots}); one profile must point at one checkpoint. Split them into two profiles.")
        for problem in problems:
            log.warning("openai engine: %s; using the other endpoints", problem)
        return revision or next(iter(roots.values()), "unversioned")

    async def _probe(self, endpoint: _Endpoint) -> tuple[list[dict] | None, str | None]:
        """(the model entries it lists, or None when it lists none; a problem, or None when usable)."""
        try:
            raw = await endpoint.client.models.with_raw_response.list(timeout=min(self.timeout_s, _PROBE_TIMEOUT_S))
        except openai.APIConnectionError as exc:
            if isinstance(exc, openai.APITimeoutError) and not _connect_failed(exc):
                return None, f"{endpoint.url}: no answer to GET /models within {min(self.timeout_s, _PROBE_TIMEOUT_S):g} s"
            return None, f"{endpoint.url}: unreachable ({_cause(exc)})"
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            return None, (f"{endpoint.url}: API key refused (HTTP {exc.status_code}); set `api_key_env` in the profile to "
                          "the environment variable that holds the key")
        except openai.APIStatusError:
            return None, None  # reachable; it just does not list models
        try:
            entries = [e for e in json.loads(raw.content)["data"] if isinstance(e, dict) and "id" in e]
        except (ValueError, KeyError, TypeError):
            entries = None
        return entries, None

    # --- one batch (on the loop) ----------------------------------------------------------------------

    async def _generate(self, requests: list[Request], on_done=None) -> list[Response]:
        results: list[Response | None] = [None] * len(requests)
        todo = iter(range(len(requests)))

        async def worker():
            for index in todo:
                results[index] = await self._call(requests[index])
                if on_done is not None:
                    on_done((index, results[index]))

        n_workers = min(len(requests), sum(e.max_concurrency for e in self._endpoints))
        await asyncio.gather(*(worker() for _ in range(n_workers)))
        return results

    async def _call(self, request: Request) -> Response:
        """One request to its end: an answer, or an error after the retries it is allowed."""
        call_id = request.call_id(self.name, self.model, self.revision)
        self._counts["requests"] += 1
        started = None
        errors = rate_limits = 0
        try:
            body = request_body(request, self.model, self.max_tokens_param)
        except OSError as exc:
            return self._failed(call_id, f"image not readable: {exc}", transient=True)
        cost = _estimated_tokens(request)
        while True:
            if self._rpm:
                await self._rpm.take(1)
            if self._tpm:
                await self._tpm.take(cost)
            endpoint = await self._acquire()
            started = started or time.perf_counter()
            try:
                outcome = await self._attempt(endpoint, body, request)
            except Exception as exc:  # a bug or an unforeseen client error: this request fails, the batch goes on
                log.exception("openai engine: unexpected error on %s", endpoint.url)
                outcome = _Outcome("failed", error=type(exc).__name__, detail=str(exc))
            finally:
                self._release(endpoint)
            latency = time.perf_counter() - started
            if outcome.kind == "answered":
                return self._answered(call_id, endpoint, outcome, latency, cost)
            if outcome.kind == "guided_rejected":
                endpoint.takes_response_format = False
                self._counts["guided_fallbacks"] += 1
                log.warning("openai engine: %s refused response_format (%s); its requests go unguided from now on",
                            endpoint.url, outcome.detail)
                continue
            if outcome.kind == "rate_limited":
                rate_limits += 1
                endpoint.counts["rate_limited"] += 1
                self._pause(endpoint, outcome.retry_after_s)
                if rate_limits <= self.max_rate_limit_retries:
                    continue
                return self._failed(call_id, f"{outcome.error} from {endpoint.url}, still after {rate_limits - 1} "
                                    f"waits for Retry-After: {outcome.detail}", endpoint=endpoint, latency=latency)
            if outcome.kind == "retry" and errors < self.max_retries:
                delay = backoff_s(errors, self.backoff_base_s, self.backoff_max_s, self._jitter())
                errors += 1
                endpoint.counts["retries"] += 1
                await asyncio.sleep(delay)
                continue
            tries = f" after {errors} retries" if errors else ""
            detail = f": {outcome.detail}" if outcome.detail else ""
            return self._failed(call_id, f"{outcome.error} from {endpoint.url}{tries}{detail}",
                                transient=outcome.transient, endpoint=endpoint, latency=latency)

    async def _attempt(self, endpoint: _Endpoint, body: dict, request: Request) -> _Outcome:
        endpoint.counts["calls"] += 1
        guided = self._guidance(endpoint, request.response_schema)
        try:
            # The client's generic POST, not chat.completions.create: the body is already OpenAI's shape,
            # create() would re-walk it against its TypedDicts (0.5 of 1.8 ms of client CPU per call,
            # measured), and we want the raw bytes anyway, to report a malformed answer as it came.
            raw = await endpoint.client.post("/chat/completions", cast_to=httpx2.Response,
                                             body={**body, **self.extra_body, **guided}, options=self._options)
        except openai.APIConnectionError as exc:
            if isinstance(exc, openai.APITimeoutError) and not _connect_failed(exc):
                endpoint.counts["timeouts"] += 1
                return _Outcome("retry", error=f"timeout after {self.timeout_s:g} s")
            endpoint.counts["connection_errors"] += 1
            endpoint.failures += 1
            endpoint.down_until = asyncio.get_running_loop().time() + backoff_s(
                endpoint.failures - 1, self.backoff_base_s, self.backoff_max_s, 1.0)
            return _Outcome("retry", error=f"connection error ({_cause(exc)})")
        except openai.APIStatusError as exc:
            return _status_outcome(exc, guided_by_response_format="response_format" in guided and self.guided_json == "auto")
        endpoint.failures = endpoint.rate_limits = 0
        return parse_completion(raw.content, request.n)

    def _guidance(self, endpoint: _Endpoint, schema: dict | None) -> dict:
        """Body fields that ask the server for JSON following `schema`, per `guided_json`."""
        mode = self.guided_json
        if schema is None or mode == "off" or (mode == "auto" and not endpoint.takes_response_format):
            return {}
        if mode == "vllm":
            return {"structured_outputs": {**self.extra_body.get("structured_outputs", {}), "json": schema}}
        return {"response_format": {"type": "json_schema", "json_schema": {"name": schema_name(schema), "schema": schema}}}

    def _answered(self, call_id: str, endpoint: _Endpoint, outcome: _Outcome, latency: float, cost: int) -> Response:
        endpoint.counts["answered"] += 1
        self._counts["answered"] += 1
        self._counts["prompt_tokens"] += outcome.usage.get("prompt_tokens", 0)
        self._counts["completion_tokens"] += outcome.usage.get("completion_tokens", 0)
        if self._tpm and outcome.usage:
            self._tpm.refund(cost - sum(outcome.usage.values()))
        return Response(texts=outcome.texts, call_id=call_id, usage=outcome.usage, latency_s=latency)

    def _failed(self, call_id: str, error: str, *, transient: bool = True, endpoint: _Endpoint | None = None,
                latency: float = 0.0) -> Response:
        self._counts["failed"] += 1
        if endpoint is not None:
            endpoint.counts["failed"] += 1
        return Response(texts=[], call_id=call_id, error=error, transient=transient, latency_s=latency)

    # --- slots: least in flight, skipping paused and down endpoints (on the loop) ---------------------

    async def _acquire(self) -> _Endpoint:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            endpoint = self._pick(now)
            if endpoint is not None:
                endpoint.in_flight += 1
                endpoint.counts["max_in_flight"] = max(endpoint.counts["max_in_flight"], endpoint.in_flight)
                return endpoint
            waiter = loop.create_future()
            self._waiters.append(waiter)
            # Woken by a released slot, or when the first pause or down time ends.
            wake_at = min((e.blocked_until() for e in self._endpoints if now < e.blocked_until() < math.inf), default=None)
            timer = loop.call_at(wake_at, _set_done, waiter) if wake_at is not None else None
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _pick(self, now: float) -> _Endpoint | None:
        best, count = None, len(self._endpoints)
        for offset in range(count):
            endpoint = self._endpoints[(self._next + offset) % count]
            if endpoint.in_flight >= endpoint.max_concurrency or endpoint.blocked_until() > now:
                continue
            if best is None or endpoint.in_flight < best.in_flight:
                best = endpoint
        self._next = (self._next + 1) % count
        return best

    def _release(self, endpoint: _Endpoint) -> None:
        endpoint.in_flight -= 1
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def _pause(self, endpoint: _Endpoint, retry_after: float | None) -> None:
        """No worker sends to `endpoint` before Retry-After has passed (a backoff when the server gave none)."""
        if retry_after is None:
            retry_after = backoff_s(endpoint.rate_limits, self.backoff_base_s, self.backoff_max_s, self._jitter())
            endpoint.rate_limits += 1
        resume_at = asyncio.get_running_loop().time() + min(retry_after, _MAX_PAUSE_S)
        endpoint.paused_until = max(endpoint.paused_until, resume_at)

    async def _stats(self) -> dict:
        endpoints = {e.url: {**e.counts, "in_flight": e.in_flight,
                             "down": e.down_until > asyncio.get_running_loop().time()} for e in self._endpoints}
        totals = {key: sum(e[key] for e in endpoints.values())
                  for key in ("calls", "retries", "rate_limited", "timeouts", "connection_errors")}
        return {**self._counts, **totals, "endpoints": endpoints}


# --- requests ------------------------------------------------------------------------------------------


def request_body(request: Request, model: str, max_tokens_param: str = "max_tokens") -> dict:
    """The JSON body of POST /chat/completions for a request (extra_body and guidance are added per call)."""
    body = {"model": model, "messages": chat_messages(request.messages), "temperature": request.temperature,
            "top_p": request.top_p, max_tokens_param: request.max_tokens}
    if request.n != 1:  # some servers accept only n=1, and omitting it means 1
        body["n"] = request.n
    if request.seed is not None:
        body["seed"] = request.seed
    if request.stop:
        body["stop"] = list(request.stop)
    if request.continue_final_message:  # vLLM / SGLang: extend the assistant's last message, open no new turn
        body |= {"continue_final_message": True, "add_generation_prompt": False}
    return body


def chat_messages(messages: list[dict]) -> list[dict]:
    """Our messages as OpenAI chat messages: image parts become base64 data URLs; text as is."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{"type": "image_url", "image_url": {"url": data_url(p["path"], p.get("sha256", ""))}}
                       if p.get("type") == "image" else p for p in content]
        out.append({**message, "content": content})
    return out


@lru_cache(maxsize=8)  # the same image is often asked about several times in a row (styles, questions)
def data_url(path: str, sha256: str = "") -> str:
    """`data:<mime>;base64,...` of a file; the mime type from its first bytes. `sha256` keys the cache only."""
    with open(path, "rb") as f:
        data = f.read()
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def image_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return "application/octet-stream"


def schema_name(schema: dict) -> str:
    """A json_schema name OpenAI accepts (^[A-Za-z0-9_-]{1,64}$), from the schema's title."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "response"))[:64]


def _estimated_tokens(request: Request) -> int:
    return len(text_of(request.messages)) // 4 + 1 + _IMAGE_TOKENS * len(images_of(request.messages)) + \
        request.n * request.max_tokens


# --- answers -------------------------------------------------------------------------------------------


def parse_completion(raw: bytes, n: int) -> _Outcome:
    """A 200's body as n texts and usage, or the reason it is not an answer (with the raw body)."""
    try:
        completion = json.loads(raw)
        choices = completion["choices"]
        if not isinstance(choices, list) or not choices:
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return _Outcome("failed", error="malformed response (no JSON with choices)", detail=_excerpt(raw))
    if len(choices) != n:
        return _Outcome("failed", error=f"malformed response ({len(choices)} choices, asked for {n})", detail=_excerpt(raw))
    texts = []
    for k, choice in enumerate(sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            return _Outcome("failed", error=f"malformed response (choice {k} has no message)", detail=_excerpt(raw))
        content, finish = message.get("content"), choice.get("finish_reason")
        if isinstance(content, list):  # content parts, as some servers answer
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if finish == "content_filter":
            return _Outcome("failed", error=f"completion filtered (choice {k} of {n}, finish_reason=content_filter)",
                            transient=False)
        if not isinstance(content, str) or not content:
            refusal = f", refusal: {message['refusal']!r}" if message.get("refusal") else ""
            return _Outcome("failed", error=f"empty completion (choice {k} of {n}, finish_reason={finish}{refusal})",
                            transient=False)
        texts.append(content)
    usage = completion.get("usage") if isinstance(completion.get("usage"), dict) else {}
    usage = {key: int(usage[key]) for key in ("prompt_tokens", "completion_tokens") if isinstance(usage.get(key), int)}
    return _Outcome("answered", texts=texts, usage=usage)


def _status_outcome(exc: openai.APIStatusError, *, guided_by_response_format: bool) -> _Outcome:
    code, text = exc.status_code, _excerpt(exc.response.content)
    if code == 429:
        return _Outcome("rate_limited", error="HTTP 429", detail=text, retry_after_s=retry_after_s(exc.response.headers))
    if code >= 500 or code in (408, 409):
        return _Outcome("retry", error=f"HTTP {code}", detail=text)
    if code == 400 and guided_by_response_format and any(w in text.lower() for w in _GUIDANCE_WORDS):
        return _Outcome("guided_rejected", detail=text[:200])
    # 401/403/404 come from the profile or the server (key, model name, URL), not from this call.
    return _Outcome("failed", error=f"HTTP {code}", detail=text, transient=code not in (400, 413, 422))


# --- retry arithmetic (free functions, tested with plain numbers) --------------------------------------


def backoff_s(attempt: int, base_s: float, max_s: float, u: float) -> float:
    """Full jitter: u · min(max_s, base_s · 2^attempt), u uniform in [0, 1); attempt counts from 0."""
    return u * min(max_s, base_s * 2 ** min(attempt, 62))


def retry_after_s(headers, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` in seconds or as an HTTP date; None if absent."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _TokenBucket:
    """`per_minute` units a minute, up to one second's worth at once; a big request may go into debt."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level, self.at = self.capacity, time.monotonic()
        self._lock: asyncio.Lock | None = None

    async def take(self, amount: float) -> None:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:  # first come, first served
            self._refill()
            need = min(amount, self.capacity)
            if self.level < need:
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def rebind(self) -> None:
        """Forget the lock of a previous event loop (after a fork)."""
        self._lock = None

    def refund(self, amount: float) -> None:
        """Give back an overestimate (negative: charge an underestimate)."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now


# --- small helpers -------------------------------------------------------------------------------------


def _set_done(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _excerpt(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text if len(text) <= _RAW_CHARS else text[:_RAW_CHARS] + f"... ({len(text)} chars)"


def _connect_failed(exc: Exception) -> bool:
    """aiohttp reports a refused connection as a connect *timeout*; it is an unreachable endpoint."""
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, ConnectionError) or "Cannot connect to host" in str(cause) or "Connect call failed" in str(cause)


def _cause(exc: Exception) -> str:
    cause = exc.__cause__
    return f"{type(cause).__name__}: {cause}" if cause else str(exc)


def _safe_url(url: str) -> str:
    """The URL without user:password@, for messages and stats."""
    return re.sub(r"//[^/@]*@", "//", url)


def _api_key(api_key: str | None, api_key_env: str | None) -> str:
    if api_key_env:
        value = os.environ.get(api_key_env)
        if not value:
            raise EngineUnavailable(f"openai engine: environment variable {api_key_env} (the profile's `api_key_env`) "
                                    f"is not set. Export it, e.g. `export {api_key_env}=...`.")
        return value
    return api_key or "EMPTY"  # vLLM without --api-key takes any key; the client insists on one


def _check_options(urls: list, max_concurrency, guided_json, max_tokens_param, timeout_s, http_client) -> list[str]:
    problems = []
    if not urls or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
        problems.append(f"base_url must be an http(s) URL or a list of them, including /v1; got {urls!r}")
    if not isinstance(max_concurrency, int) or max_concurrency < 1:
        problems.append(f"max_concurrency must be a positive integer; got {max_concurrency!r}")
    if guided_json not in GUIDED_JSON_MODES:
        problems.append(f"guided_json must be one of {', '.join(GUIDED_JSON_MODES)}; got {guided_json!r}")
    if max_tokens_param not in ("max_tokens", "max_completion_tokens"):
        problems.append(f"max_tokens_param must be max_tokens or max_completion_tokens; got {max_tokens_param!r}")
    if not timeout_s or timeout_s <= 0:
        problems.append(f"timeout_s must be positive; got {timeout_s!r}")
    if http_client not in ("httpx", "aiohttp"):
        problems.append(f"http_client must be httpx or aiohttp; got {http_client!r}")
    elif http_client == "aiohttp" and importlib.util.find_spec("aiohttp") is None:
        problems.append('http_client "aiohttp" needs aiohttp: `pip install "openai[aiohttp]"`, or use "httpx"')
    return problems


def _unavailable_message(problems: list[str]) -> str:
    return ("openai engine: no endpoint can serve this profile:\n" + "\n".join(f"  - {p}" for p in problems) +
            "\nStart the server (vLLM: `vllm serve <model> --port 8000`), or fix `options.base_url` in the model "
            "profile (configs/models/; it includes /v1), or bind the role to another profile with "
            "`--set models.<role>=<profile>`.")


def engine_from_profile(profile: dict) -> OpenAICompatibleEngine:
    """The engine of a model profile: `model`, plus `options` as constructor keywords (unknown ones listed)."""
    options = dict(profile.get("options") or {})
    known = [name for name in inspect.signature(OpenAICompatibleEngine).parameters if name not in ("model", "jitter")]
    problems = [f"unknown option {name!r}; options are: {', '.join(known)}.{did_you_mean(name, known)}"
                for name in options if name not in known]
    if "base_url" not in options:
        problems.append("option `base_url` is required (the server's URL, including /v1)")
    if problems:
        raise RecipeError(f"model profile {profile.get('model', '')!r} (engine openai)", problems)
    return OpenAICompatibleEngine(profile.get("model"), **options)
