"""Benchmark the `openai` engine: throughput against a server's capacity, against distilabel, and its overhead.

    python benchmarks/engine_throughput.py [--requests 2000] [--capacity 64] [--latency-s 0.2] [--no-distilabel]

The server is the loopback fault server (tests/servers/fault_server.py) in a process of its own, so
client and server do not share a GIL: every answer takes `latency_s`, at most `capacity` requests
are served at once and the rest queue, so no client can exceed capacity / latency_s requests a second.
1. Our engine, max_concurrency = capacity, sends `requests` chats (after a warm-up): req/s and the
   fraction of capacity.
2. distilabel's `OpenAILLM` (the official openai client, asyncio.gather over all inputs) on the same
   server and prompts, from a bench-only venv (created once under ~/.cache/thinkmill/bench-venvs, or
   $THINKMILL_BENCH_VENVS; never a project dependency): `generate_outputs` over all inputs at once
   (its fastest way) is compared; batches of 50 (a distilabel Task's default input_batch_size) are
   printed too. Engine, bare loop and distilabel run interleaved, best of 3 each.
   A bare `AsyncOpenAI` loop at the same concurrency is timed too: on a loaded 2-core machine the
   client's turnaround, not the engine, bounds what any client reaches.
3. Overhead per call: the same number of chats against a zero-latency server, the engine against a
   bare `AsyncOpenAI` + semaphore loop on the same HTTP path (`client.post`, raw body, json.loads):
   (wall time difference) / requests, best of 3 interleaved runs each. Printed too: client CPU
   differences, the difference to a loop over `chat.completions.create` (typed and parsed), and
   the engine's own per-call work timed alone (ids, body, parsing).
Prints the figures, then, last, one line. Target (issue): >= 0.95 of capacity and >= 1.5x distilabel.
"""

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx2
import openai

from pipelines.engines.base import Request, user
from pipelines.engines.openai_compatible import (
    OpenAICompatibleEngine,
    _estimated_tokens,
    parse_completion,
    request_body,
)

REPO = Path(__file__).resolve().parents[1]
VENVS = Path(os.environ.get("THINKMILL_BENCH_VENVS", Path.home() / ".cache" / "thinkmill" / "bench-venvs"))

DISTILABEL_RUN = textwrap.dedent("""
    import json, sys, time
    from distilabel.models import OpenAILLM

    url, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    llm = OpenAILLM(model="fault-model", base_url=url, api_key="EMPTY", max_retries=0, timeout=120)
    llm.load()
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(n)]
    llm.generate_outputs(inputs=prompts[:200], num_generations=1)  # warm-up: open connections
    started = time.perf_counter()
    outputs = []
    for start in range(0, n, batch or n):
        outputs += llm.generate_outputs(inputs=prompts[start:start + (batch or n)], num_generations=1)
    elapsed = time.perf_counter() - started
    answered = sum(1 for o in outputs if o["generations"] and o["generations"][0])
    print(json.dumps({"elapsed_s": elapsed, "answered": answered}))
""")


class Server:
    """The fault server in a subprocess; stops when its stdin closes."""

    def __init__(self, *, latency_s: float, capacity: int | None):
        args = [sys.executable, "-m", "tests.servers.fault_server", "--latency-s", str(latency_s)]
        if capacity:
            args += ["--capacity", str(capacity)]
        self.process = subprocess.Popen(args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"fault server did not start: {line!r}")
        self.url = line.split()[1]

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.terminate()


def prompts(n: int) -> list[Request]:
    return [Request([user(f"question {i}")]) for i in range(n)]


def run_engine(url: str, n: int, concurrency: int, http_client: str = "aiohttp") -> tuple[float, float]:
    """(wall s, client CPU s) for n requests; warm-up excluded."""
    engine = OpenAICompatibleEngine(base_url=url, max_concurrency=concurrency, timeout_s=120, http_client=http_client)
    try:
        engine.generate(prompts(min(n, 4 * concurrency)))
        cpu, started = time.process_time(), time.perf_counter()
        responses = engine.generate(prompts(n))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        engine.close()
    failed = [r.error for r in responses if r.error]
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed, e.g. {failed[0]}")
    return wall, cpu


def run_bare(url: str, n: int, concurrency: int, *, parsed: bool, http_client: str = "aiohttp") -> tuple[float, float]:
    """The same chats with nothing but AsyncOpenAI and `concurrency` coroutines: (wall s, client CPU s).

    parsed: `chat.completions.create` (typed params, a parsed ChatCompletion); else the client's
    generic `post` returning the raw response, the HTTP path the engine itself takes.
    """

    async def main():
        limits = httpx2.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
        transport = openai.DefaultAioHttpClient if http_client == "aiohttp" else openai.DefaultAsyncHttpx2Client
        client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=120,
                                    http_client=transport(limits=limits))

        async def one(i):
            messages = [{"role": "user", "content": [{"type": "text", "text": f"question {i}"}]}]
            if parsed:
                completion = await client.chat.completions.create(model="fault-model", messages=messages, max_tokens=256)
                return completion.choices[0].message.content
            response = await client.post("/chat/completions", cast_to=httpx2.Response, options={"timeout": 120},
                                         body={"model": "fault-model", "messages": messages, "max_tokens": 256})
            return json.loads(response.content)["choices"][0]["message"]["content"]

        async def run(count):
            texts, todo = [], iter(range(count))

            async def worker():
                for i in todo:
                    texts.append(await one(i))

            await asyncio.gather(*(worker() for _ in range(min(count, concurrency))))
            return texts

        await run(min(n, 4 * concurrency))
        cpu, started = time.process_time(), time.perf_counter()
        texts = await run(n)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        await client.close()
        assert len(texts) == n and all(texts)
        return wall, cpu

    return asyncio.run(main())


def own_work_us(repeat: int = 20000) -> float:
    """µs per call of what the engine adds around the HTTP call: call id, body, token estimate, parsing."""
    request = prompts(1)[0]
    answer = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "echo 0: question 0"},
                                      "finish_reason": "stop"}], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
    started = time.perf_counter()
    for _ in range(repeat):
        request.call_id("openai", "fault-model", "fault-org/fault-model")
        request_body(request, "fault-model")
        _estimated_tokens(request)
        parse_completion(answer.encode(), 1)
    return (time.perf_counter() - started) / repeat * 1e6


def distilabel_python() -> tuple[Path | None, str]:
    """The bench venv's python, created on first use; or None and why not."""
    venv = VENVS / "distilabel"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import distilabel.models, openai; print(distilabel.__version__)"]
    if python.exists():
        done = subprocess.run(check, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return python, done.stdout.strip()
    print(f"creating the distilabel bench venv in {venv} (once) ...", flush=True)
    # distilabel 1.5.3 imports `requests` without declaring it (with the current huggingface_hub it is not pulled in)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(venv / "bin" / "pip"), "install", "-q", "distilabel[openai]", "requests"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, f"`{' '.join(step)}` failed: {' / '.join(tail)}"
    done = subprocess.run(check, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None, f"distilabel installed but does not import: {done.stderr.strip().splitlines()[-1:]}"
    return python, done.stdout.strip()


def run_distilabel(python: Path, url: str, n: int, batch: int) -> float:
    """distilabel's wall seconds for n chats (batch 0: all at once)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(DISTILABEL_RUN)
    try:
        done = subprocess.run([str(python), script.name, url, str(n), str(batch)], capture_output=True, text=True,
                              timeout=1800, check=False)
    finally:
        os.unlink(script.name)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["answered"] != n:
        raise RuntimeError(f"distilabel answered {result['answered']} of {n}")
    return result["elapsed_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--capacity", type=int, default=64)
    parser.add_argument("--latency-s", type=float, default=0.2)
    parser.add_argument("--http-client", choices=["httpx", "aiohttp"], default="aiohttp", help="the engine's transport")
    parser.add_argument("--no-distilabel", action="store_true")
    args = parser.parse_args()
    n, capacity = args.requests, args.capacity
    ceiling = capacity / args.latency_s

    print(f"server: {args.latency_s * 1000:g} ms per answer, {capacity} at once -> at most {ceiling:.0f} req/s")
    python, why = (None, "not run (--no-distilabel)") if args.no_distilabel else distilabel_python()
    if python is None:
        print(f"distilabel not measured: {why}")
    rates = {"engine": [], "bare": [], "distilabel": []}
    with Server(latency_s=args.latency_s, capacity=capacity) as server:
        for _ in range(3):  # interleaved, best of 3 each: the machine is shared, and load elsewhere comes and goes
            rates["engine"].append(n / run_engine(server.url, n, capacity, args.http_client)[0])
            rates["bare"].append(n / run_bare(server.url, n, capacity, parsed=False, http_client=args.http_client)[0])
            if python is not None:
                try:
                    rates["distilabel"].append(n / run_distilabel(python, server.url, n, 0))
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    why = f"its run failed: {exc}"
        batched = None
        if rates["distilabel"]:
            try:
                batched = n / run_distilabel(python, server.url, n, 50)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"distilabel in batches of 50 failed: {exc}")
        with_aiohttp = None
        if args.http_client == "httpx" and importlib.util.find_spec("aiohttp"):
            with_aiohttp = max(n / run_engine(server.url, n, capacity, "aiohttp")[0] for _ in range(3))
    ours, bare = max(rates["engine"]), max(rates["bare"])
    distilabel = max(rates["distilabel"], default=None)
    print(f"openai engine ({args.http_client}), max_concurrency {capacity}, {n} requests: {ours:.0f} req/s "
          f"= {ours / ceiling:.3f} of capacity (runs: {', '.join(f'{r:.0f}' for r in rates['engine'])})")
    print(f"bare AsyncOpenAI.post loop ({args.http_client}), {capacity} at once (what this machine allows now): {bare:.0f} req/s "
          f"= {bare / ceiling:.3f} of capacity (runs: {', '.join(f'{r:.0f}' for r in rates['bare'])})")
    if with_aiohttp:
        print(f"openai engine (aiohttp): {with_aiohttp:.0f} req/s = {with_aiohttp / ceiling:.3f} of capacity")
    if distilabel:
        print(f"distilabel {why} OpenAILLM.generate_outputs, all inputs at once: {distilabel:.0f} req/s "
              f"= {distilabel / ceiling:.3f} of capacity (runs: {', '.join(f'{r:.0f}' for r in rates['distilabel'])})")
    if batched:
        print(f"distilabel in batches of 50 (a Task's default input_batch_size): {batched:.0f} req/s "
              f"= {batched / ceiling:.3f} of capacity")

    with Server(latency_s=0.0, capacity=None) as server:
        runs = {"engine": [], "post": [], "create": []}
        for _ in range(3):  # interleaved, so a burst of load elsewhere on the machine hits all three
            runs["engine"].append(run_engine(server.url, n, capacity, args.http_client))
            runs["post"].append(run_bare(server.url, n, capacity, parsed=False, http_client=args.http_client))
            runs["create"].append(run_bare(server.url, n, capacity, parsed=True, http_client=args.http_client))
    wall = {name: min(w for w, _ in r) for name, r in runs.items()}
    cpu = {name: min(c for _, c in r) for name, r in runs.items()}
    overhead_us = (wall["engine"] - wall["post"]) / n * 1e6
    print(f"zero-latency server, {n} requests, {capacity} at once, best of 3: engine {wall['engine']:.2f} s, "
          f"bare post loop {wall['post']:.2f} s, bare create() loop {wall['create']:.2f} s")
    print(f"engine vs bare post loop: {overhead_us:+.0f} µs/call wall, {(cpu['engine'] - cpu['post']) / n * 1e6:+.0f} µs/call "
          f"client CPU; vs bare create() loop: {(wall['engine'] - wall['create']) / n * 1e6:+.0f} µs/call wall, "
          f"{(cpu['engine'] - cpu['create']) / n * 1e6:+.0f} µs/call CPU")

    print(f"the engine's own work per call (ids, body, parsing; no I/O): {own_work_us():.0f} µs")

    versus = f"{ours / distilabel:.1f}x distilabel ({distilabel:.0f} req/s)" if distilabel else f"distilabel: {why}"
    print(f"engine_throughput: {ours:.0f} req/s = {ours / ceiling:.2f} of capacity ({ceiling:.0f}); {versus}; "
          f"overhead {overhead_us:.0f} µs/call")


if __name__ == "__main__":
    main()
