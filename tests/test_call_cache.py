"""The call cache: a re-run makes no model call, a killed run pays only for what it had not stored,
threads and processes share one file, and only deterministic errors are replayed.

A counting engine (below) records every call it is asked; the kill-and-resume and two-process
tests run `_resume_worker` / `_overlap_worker` from this module in child interpreters.
"""

import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipelines.engines import EngineRegistry
from pipelines.engines.base import Request, Response, image_part, system, text_of, user
from pipelines.engines.scripted import ScriptedEngine
from stores.call_cache import CachedEngine, CallCache

REPO = Path(__file__).resolve().parents[1]
SHA = "a" * 64


def ask(text: str, *, sha: str = SHA, path: str = "/images/a.png", **fields) -> Request:
    fields.setdefault("prompt_version", "v1")
    fields.setdefault("task", "test.answer")
    return Request(messages=[system("Answer briefly."), user(image_part(path, sha), text)], **fields)


class CountingEngine:
    """Answers `<question>#<k>` for each of n completions; counts calls per call id; fails on cue."""

    name = "counting"

    def __init__(self, model: str = "counter-1", revision: str = "r1", *, errors: dict | None = None,
                 sleep_s: float = 0.0, log: Path | None = None):
        self.model, self.revision = model, revision
        self.errors = errors or {}  # question -> (message, transient)
        self.sleep_s, self.log = sleep_s, log
        self.calls: Counter = Counter()
        self._lock = threading.Lock()

    @property
    def n_calls(self) -> int:
        return sum(self.calls.values())

    def generate(self, requests: list[Request]) -> list[Response]:
        time.sleep(self.sleep_s)
        responses = []
        for request in requests:
            call_id = request.call_id(self.name, self.model, self.revision)
            question = text_of(request.messages).splitlines()[-1]
            with self._lock:
                self.calls[call_id] += 1
            if question in self.errors:
                message, transient = self.errors[question]
                responses.append(Response([], call_id, error=message, transient=transient))
            else:
                responses.append(Response([f"{question}#{k}" for k in range(request.n)], call_id,
                                          usage={"completion_tokens": request.n}, latency_s=0.25))
        if self.log is not None:  # paid for: written before the cache gets to store anything
            with open(self.log, "a") as log:
                log.write("".join(f"{r.call_id}\n" for r in responses))
        return responses


def texts_match(requests, responses) -> bool:
    return all(resp.texts == [f"{text_of(req.messages).splitlines()[-1]}#{k}" for k in range(req.n)]
               for req, resp in zip(requests, responses, strict=True))


@pytest.fixture
def cache(tmp_path) -> CallCache:
    cache = CallCache(tmp_path / "calls.sqlite")
    yield cache
    cache.close()


def test_a_second_pass_makes_no_model_call_and_replays_the_same_texts(cache):
    inner = CountingEngine()
    engine = CachedEngine(inner, cache)
    requests = [ask(f"q{i}", n=1 + i % 3) for i in range(20)]
    first = engine.generate(requests)
    assert inner.n_calls == 20 and len(cache) == 20
    assert not any(r.usage.get("cached") for r in first)

    again = engine.generate(requests)
    assert inner.n_calls == 20
    assert (engine.hits, engine.misses) == (20, 20)
    assert [r.texts for r in again] == [r.texts for r in first] and texts_match(requests, again)
    assert [len(r.texts) for r in again] == [1 + i % 3 for i in range(20)]
    assert all(r.usage == {"completion_tokens": len(r.texts), "cached": True} and r.latency_s == 0.25 for r in again)
    assert [r.call_id for r in again] == [q.call_id("counting", "counter-1", "r1") for q in requests]


@pytest.mark.parametrize("changed, asks_again", [
    ({"prompt_version": "v2"}, True),
    ({"temperature": 0.7}, True),
    ({"seed": 7}, True),
    ({"max_tokens": 64}, True),
    ({"n": 2}, True),
    ({"response_schema": {"type": "object"}}, True),
    ({"sha": "b" * 64}, True),
    ({"path": "/moved/elsewhere.png"}, False),  # the same image bytes (sha256) in another place
    ({"task": "test.other"}, False),            # a label for logs, not part of what the model sees
    ({"hints": {"scene": "{}"}}, False),        # out-of-band facts for the scripted teacher
], ids=lambda v: ",".join(v) if isinstance(v, dict) else str(v))
def test_what_the_model_sees_is_the_key(cache, changed, asks_again):
    inner = CountingEngine()
    engine = CachedEngine(inner, cache)
    engine.generate([ask("q")])
    (response,) = engine.generate([ask("q", **changed)])
    assert inner.n_calls == 1 + asks_again
    assert response.usage.get("cached", False) is not asks_again


def test_another_model_revision_is_another_call(cache):
    CachedEngine(CountingEngine(revision="r1"), cache).generate([ask("q")])
    retrained, renamed = CountingEngine(revision="r2"), CountingEngine(model="counter-2")
    CachedEngine(retrained, cache).generate([ask("q")])
    CachedEngine(renamed, cache).generate([ask("q")])
    assert (retrained.n_calls, renamed.n_calls, len(cache)) == (1, 1, 3)


def test_hits_and_misses_come_back_in_request_order(cache):
    inner = CountingEngine()
    engine = CachedEngine(inner, cache)
    engine.generate([ask(f"q{i}") for i in range(0, 30, 2)])  # the even ones are stored
    requests = [ask(f"q{i}") for i in range(30)] + [ask("q3"), ask("q4"), ask("q5")]
    random.Random(0).shuffle(requests)
    responses = engine.generate(requests)
    assert texts_match(requests, responses)
    odd = {q.call_id("counting", "counter-1", "r1") for q in requests if int(text_of(q.messages)[-1]) % 2}
    assert sum(inner.calls[c] for c in odd) == len(odd) == 15  # a duplicate in one batch is asked once
    assert (engine.misses, engine.hits) == (15 + 15, 18)
    # Answered without a call of its own: a stored (even) one, or the repeat of an odd one asked earlier in the batch.
    cached = [r.usage.get("cached", False) for r in responses]
    expected, asked = [], set()
    for q in requests:
        number = int(text_of(q.messages).removeprefix("Answer briefly.\nq"))
        expected.append(number % 2 == 0 or number in asked)
        asked.add(number)
    assert cached == expected and sum(cached) == 18  # what `hits` counted for this batch


def test_deterministic_errors_are_replayed_and_transient_ones_asked_again(cache):
    inner = CountingEngine(errors={"refused": ("400: blocked by the content filter", False),
                                   "flaky": ("503: server overloaded", True)})
    engine = CachedEngine(inner, cache)
    refused, flaky = ask("refused"), ask("flaky")
    first = engine.generate([refused, flaky, ask("fine")])
    assert [r.error for r in first] == ["400: blocked by the content filter", "503: server overloaded", None]
    assert cache.stats() | {"by_task": None, "by_prompt_version": None, "path": None} == {
        "n_calls": 3, "n_ok": 1, "n_errors": 1, "n_transient_errors": 1, "by_task": None,
        "by_prompt_version": None, "path": None}

    replayed, asked_again, _ = engine.generate([refused, flaky, ask("fine")])
    assert inner.calls[refused.call_id("counting", "counter-1", "r1")] == 1
    assert replayed.error == "400: blocked by the content filter" and replayed.usage["cached"]
    assert inner.calls[flaky.call_id("counting", "counter-1", "r1")] == 2
    assert asked_again.error == "503: server overloaded" and "cached" not in asked_again.usage

    del inner.errors["flaky"]  # the server recovered: the answer replaces the recorded failure
    assert engine.generate([flaky])[0].texts == ["flaky#0"]
    assert engine.generate([flaky])[0].usage["cached"]
    assert inner.calls[flaky.call_id("counting", "counter-1", "r1")] == 3
    assert (len(cache), cache.stats()["n_transient_errors"], cache.stats()["n_ok"]) == (3, 0, 2)


def test_invalidating_a_prompt_version_deletes_exactly_its_calls(cache):
    inner = CountingEngine()
    engine = CachedEngine(inner, cache)
    old = [ask(f"q{i}", prompt_version="caption-v1") for i in range(10)]
    other = [ask(f"q{i}", prompt_version="qa-v3", task="synthesize_qa.write") for i in range(7)]
    engine.generate(old + other)
    assert cache.stats()["by_prompt_version"] == {"caption-v1": 10, "qa-v3": 7}

    assert cache.invalidate(prompt_version="caption-v1") == 10
    assert cache.invalidate(prompt_version="caption-v1") == 0
    assert len(cache) == 7
    engine.generate(old + other)
    assert inner.n_calls == 17 + 10
    assert sum(inner.calls[q.call_id("counting", "counter-1", "r1")] for q in other) == 7

    assert cache.invalidate(task="synthesize_qa.write", model="someone-else") == 0
    assert cache.invalidate(task="synthesize_qa.write", model="counter-1") == 7
    with pytest.raises(ValueError, match="at least one of prompt_version"):
        cache.invalidate()


def test_threads_sharing_one_engine_store_one_row_per_call(cache):
    # 4 workers x 200 requests, windows overlapping by 150, in shuffled batches of 10: 350 distinct calls.
    inner = CountingEngine(sleep_s=0.002)
    engine = CachedEngine(inner, cache)

    def work(worker: int) -> list[tuple[list[Request], list[Response]]]:
        requests = [ask(f"q{i}") for i in range(worker * 50, worker * 50 + 200)]
        random.Random(worker).shuffle(requests)
        batches = [requests[start:start + 10] for start in range(0, 200, 10)]
        return [(batch, engine.generate(batch)) for batch in batches]

    with ThreadPoolExecutor(4) as pool:
        results = [pair for batches in pool.map(work, range(4)) for pair in batches]  # re-raises a worker's error
    assert all(texts_match(batch, responses) for batch, responses in results)
    # Concurrent identical misses may each call the model (at most once per worker), never more.
    assert len(inner.calls) == 350 and max(inner.calls.values()) <= 4
    assert len(cache) == 350 and engine.hits + engine.misses == 800 and engine.misses == inner.n_calls
    CachedEngine(inner, cache).generate([ask(f"q{i}") for i in range(350)])
    assert inner.n_calls == engine.misses  # the next pass is all hits


def _child(function: str, *args) -> subprocess.Popen:
    code = f"import sys; from tests.test_call_cache import {function}; {function}(*sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _overlap_worker(db: str, first: str, go: str) -> None:
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.005)
    engine = CachedEngine(CountingEngine(), CallCache(Path(db)))  # both create the file and table at once
    requests = [ask(f"q{i}") for i in range(int(first), int(first) + 400)]
    for start in range(0, len(requests), 20):
        engine.generate(requests[start:start + 20])


def test_two_processes_writing_overlapping_calls_store_one_row_each(tmp_path):
    db, go = tmp_path / "calls.sqlite", tmp_path / "go"
    children = [_child("_overlap_worker", db, first, go) for first in (0, 200)]
    for child in children:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    go.touch()
    for child in children:
        _, stderr = child.communicate(timeout=60)
        assert child.returncode == 0, stderr
    cache = CallCache(db)
    requests = [ask(f"q{i}") for i in range(600)]
    assert len(cache) == 600
    call_ids = [q.call_id("counting", "counter-1", "r1") for q in requests]
    stored = cache.get_many(call_ids)
    assert texts_match(requests, [stored[call_id] for call_id in call_ids])
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    cache.close()


def _resume_worker(db: str, log: str, sleep_s: str) -> None:
    engine = CachedEngine(CountingEngine(sleep_s=float(sleep_s), log=Path(log)), CallCache(Path(db)))
    requests = [ask(f"q{i}") for i in range(300)]
    for start in range(0, 300, 10):
        engine.generate(requests[start:start + 10])


def test_a_killed_run_resumes_paying_only_for_calls_not_stored(tmp_path):
    db, first_log, second_log = tmp_path / "calls.sqlite", tmp_path / "first.log", tmp_path / "second.log"
    all_ids = {ask(f"q{i}").call_id("counting", "counter-1", "r1") for i in range(300)}
    first = _child("_resume_worker", db, first_log, 0.05)
    deadline = time.monotonic() + 60
    while _stored(db) < 60:  # about a fifth of the way
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1]
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL

    stored_before = _stored_ids(db)
    paid_first = first_log.read_text().split()
    assert 60 <= len(stored_before) < 300
    assert stored_before <= set(paid_first) and len(paid_first) == len(set(paid_first))
    assert len(paid_first) - len(stored_before) <= 10  # at most the batch in flight was lost

    second = _child("_resume_worker", db, second_log, 0)
    assert second.wait(timeout=60) == 0, second.communicate()[1]
    paid_second = second_log.read_text().split()
    assert set(paid_second) == all_ids - stored_before
    assert len(paid_second) == 300 - len(stored_before)
    assert len(stored_before) + len(paid_second) == 300 == len(_stored_ids(db))


def _stored(db: Path) -> int:
    return len(_stored_ids(db)) if db.exists() else 0


def _stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            return {row[0] for row in conn.execute("SELECT call_id FROM calls")}
        except sqlite3.OperationalError:  # the child has not created the table yet
            return set()


def test_the_registry_wraps_every_engine_when_given_a_cache(tmp_path, cache):
    profiles = {"teacher": {"engine": "scripted", "model": "scripted-call-cache-test"}}
    plain = EngineRegistry(profiles, tmp_path)
    assert isinstance(plain.engine("teacher"), ScriptedEngine)

    registry = EngineRegistry(profiles, tmp_path, cache=cache)
    teacher = registry.engine("teacher")
    assert isinstance(teacher, CachedEngine) and registry.engine("teacher") is teacher
    assert (teacher.name, teacher.model, teacher.revision) == ("scripted", "scripted-call-cache-test", "world-v1")
    assert registry.fingerprint("teacher") == plain.fingerprint("teacher")  # shard cache keys do not move

    requests = [Request(messages=[user(f"judge {i}")], task="judge", prompt_version="judge-v1",
                        hints={"candidate": f"{i} red circles", "reference": "3 red circles"}) for i in range(6)]
    first = teacher.generate(requests)
    again = EngineRegistry(profiles, tmp_path, cache=CallCache(cache.path)).engine("teacher").generate(requests)
    direct = plain.engine("teacher").generate(requests)
    assert [r.texts for r in again] == [r.texts for r in first] == [r.texts for r in direct]
    assert all(r.usage["cached"] for r in again)
    assert registry.cache_counts() == {"hits": 0, "misses": 6}

    revived = pickle.loads(pickle.dumps(registry))  # what a process-pool or Ray worker receives
    assert revived.cache.path == cache.path and len(revived.cache) == 6
    assert revived.engine("teacher").generate(requests[:2])[0].usage["cached"]
