"""The call cache: every model call a run pays for, kept in `<dataset>/calls.sqlite` and replayed.

A call is keyed by `Request.call_id(engine, model, revision)`: engine kind, model, revision, the
messages with images reduced to their sha256, the sampling parameters, the response schema and the
prompt version. `CachedEngine` wraps any engine: it looks a batch up in one query, sends only the
misses to the model (one batch, in order), and commits their answers before returning, so a re-run
with the same inputs makes no model call and a killed run resumes paying only for calls not yet
stored (at most the one batch in flight when it died is paid twice).

What is replayed:
- an answer (`error` is None): always; its texts are the raw model output.
- a deterministic error (`error` set, `transient` False: a 400, a content filter, a task the engine
  cannot do): replayed, since asking again would fail the same way.
- a transient error (`transient` True: timeout, 5xx, 429, dropped connection): recorded for audit
  but never replayed; the next run asks again, and its result replaces the row.
A replayed response carries `usage["cached"] = True`; texts, error, usage and latency are as stored.

Concurrency: SQLite in WAL mode with a busy timeout, one connection per thread and process, each
write batch one `BEGIN IMMEDIATE` transaction with an upsert on the key, so threads and processes
may share the file and it ends with exactly one row per call. Two workers that miss the same call
at the same moment both pay for it; the first to commit wins, and the second's row is dropped.

Invalidation: a new prompt version changes the call id, so bumping a stage's prompt version re-asks
by itself; `invalidate(prompt_version=...)` deletes the old rows. To ignore the cache for one run,
build the `EngineRegistry` without one.
"""

import json
import os
import sqlite3
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from pipelines.engines.base import Engine, Request, Response, _strip_paths

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id        TEXT PRIMARY KEY,
    engine         TEXT NOT NULL,
    model          TEXT NOT NULL,
    revision       TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    task           TEXT NOT NULL,
    texts          TEXT NOT NULL,     -- JSON list: the n raw completions
    error          TEXT,
    transient      INTEGER NOT NULL,  -- 1: an error worth retrying; never replayed
    usage          TEXT NOT NULL,     -- JSON object
    latency_s      REAL NOT NULL,
    created_at     TEXT NOT NULL,     -- UTC, ISO 8601
    messages       TEXT NOT NULL,     -- JSON, images as their sha256 only
    params         TEXT NOT NULL      -- JSON: n, temperature, top_p, max_tokens, seed, stop, response_schema
);
CREATE INDEX IF NOT EXISTS calls_prompt_version ON calls (prompt_version);
CREATE INDEX IF NOT EXISTS calls_task ON calls (task);
"""

_COLUMNS = ("call_id", "engine", "model", "revision", "prompt_version", "task", "texts", "error", "transient", "usage",
            "latency_s", "created_at", "messages", "params")
_RESULT_COLUMNS = ("texts", "error", "transient", "usage", "latency_s", "created_at")

# First answer wins; only a transient error gives way to a later result for the same call.
_UPSERT = (f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           f"ON CONFLICT (call_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _RESULT_COLUMNS)} "
           "WHERE calls.transient = 1")

_REPLAYABLE = "(error IS NULL OR transient = 0)"
_MAX_VARIABLES = 500  # ids per IN (...) query, well under SQLite's limit on bound parameters
BUSY_TIMEOUT_S = 60.0


class CallCache:
    """One SQLite file of calls. Safe to share between threads and processes; picklable (by path)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._conn()  # create the file and table now, so a bad path fails here and not mid-run

    def get_many(self, call_ids: list[str]) -> dict[str, Response]:
        """The replayable responses among `call_ids` (answers and deterministic errors), by call id."""
        unique = list(dict.fromkeys(call_ids))
        found = {}
        for start in range(0, len(unique), _MAX_VARIABLES):
            chunk = unique[start:start + _MAX_VARIABLES]
            rows = self._conn().execute(
                f"SELECT call_id, texts, error, usage, latency_s FROM calls "
                f"WHERE call_id IN ({', '.join('?' * len(chunk))}) AND {_REPLAYABLE}", chunk)
            for call_id, texts, error, usage, latency_s in rows:
                found[call_id] = Response(json.loads(texts), call_id, error=error,
                                          usage={**json.loads(usage), "cached": True}, latency_s=latency_s)
        return found

    def put_many(self, calls: list[tuple[Request, Response]], *, engine: str, model: str, revision: str) -> None:
        """Store the results of `calls` made to (engine, model, revision), in one committed transaction."""
        if not calls:
            return
        created_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        rows = [_row(request, response, engine, model, revision, created_at) for request, response in calls]
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no deadlock on upgrade
        try:
            conn.executemany(_UPSERT, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def invalidate(self, *, prompt_version: str | None = None, task: str | None = None, model: str | None = None,
                   engine: str | None = None) -> int:
        """Delete the calls matching every filter given; return how many rows went."""
        filters = {"prompt_version": prompt_version, "task": task, "model": model, "engine": engine}
        given = {column: value for column, value in filters.items() if value is not None}
        if not given:
            raise ValueError(f"invalidate() needs at least one of {', '.join(filters)}; "
                             f"to drop every call, delete {self.path}")
        where = " AND ".join(f"{column} = ?" for column in given)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = conn.execute(f"DELETE FROM calls WHERE {where}", list(given.values())).rowcount
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return deleted

    def stats(self) -> dict:
        """Row counts: all calls, answers, replayed errors, transient errors; calls per task and per prompt version."""
        conn = self._conn()
        n_calls, n_ok, n_errors, n_transient = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE error IS NULL), "
            "count(*) FILTER (WHERE error IS NOT NULL AND transient = 0), "
            "count(*) FILTER (WHERE error IS NOT NULL AND transient = 1) FROM calls").fetchone()
        by = {column: dict(conn.execute(f"SELECT {column}, count(*) FROM calls GROUP BY 1 ORDER BY 1").fetchall())
              for column in ("task", "prompt_version")}
        return {"path": str(self.path), "n_calls": n_calls, "n_ok": n_ok, "n_errors": n_errors,
                "n_transient_errors": n_transient, "by_task": by["task"], "by_prompt_version": by["prompt_version"]}

    def __len__(self) -> int:
        return self._conn().execute("SELECT count(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        """Close every connection this object opened (call when no thread is using it)."""
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def __getstate__(self) -> dict:  # connections stay behind: a worker process opens its own
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return f"CallCache({str(self.path)!r})"

    def _conn(self) -> sqlite3.Connection:
        # A connection must not cross a fork, so the owner's pid is checked as well as the thread.
        conn, pid = getattr(self._local, "conn", None), getattr(self._local, "pid", None)
        if conn is not None and pid == os.getpid():
            return conn
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        _set_wal(conn)                                # readers never wait for the writer
        conn.execute("PRAGMA synchronous = NORMAL")   # in WAL mode: a killed process loses no commit
        conn.executescript(_SCHEMA)
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._connections_lock:
            self._connections.append(conn)
        return conn


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (it stays WAL once switched).

    Two processes creating the file at once can both ask for the switch, and SQLite answers the
    loser "database is locked" at once, without waiting on the busy timeout: retry until it holds.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class CachedEngine:
    """An engine that answers from the call cache and asks `inner` only for calls not stored yet.

    `hits` counts requests answered without a model call (from the file, or a duplicate of another
    request of the same batch, which is asked once); `misses` counts calls sent to `inner`.
    """

    def __init__(self, inner: Engine, cache: CallCache):
        self.inner, self.cache = inner, cache
        self.hits = self.misses = 0
        self._counts_lock = threading.Lock()

    # Identity passes through, so call ids and the flow's engine fingerprints are those of `inner`.
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def revision(self) -> str:
        return self.inner.revision

    @property
    def continues_assistant_prefix(self) -> bool:
        return getattr(self.inner, "continues_assistant_prefix", False)

    def generate(self, requests: list[Request]) -> list[Response]:
        name, model, revision = self.name, self.model, self.revision
        call_ids = [request.call_id(name, model, revision) for request in requests]
        found = self.cache.get_many(call_ids)
        for request, call_id in zip(requests, call_ids):  # token log-probs and attentions are not stored:
            if request.return_logprobs or request.return_attentions:  # such calls are always made afresh
                found.pop(call_id, None)
        first_of = {}  # a call not in the file -> the first request that asks it
        for index, call_id in enumerate(call_ids):
            if call_id not in found:
                first_of.setdefault(call_id, index)
        if first_of:
            asked = [requests[index] for index in first_of.values()]
            answers = self._ask(asked)
            if len(answers) == len(asked):
                answers = [answer if answer.call_id == call_id else replace(answer, call_id=call_id)
                           for answer, call_id in zip(answers, first_of)]
                self.cache.put_many(list(zip(asked, answers)), engine=name, model=model, revision=revision)
                found.update(zip(first_of, answers))
            else:  # an engine bug: which answer is whose is unknown, so none is stored or returned
                error = f"{name} engine returned {len(answers)} responses for {len(asked)} requests"
                found.update((call_id, Response([], call_id, error=error, transient=True)) for call_id in first_of)
        with self._counts_lock:
            self.misses += len(first_of)
            self.hits += len(requests) - len(first_of)
        return [found[call_id] for call_id in call_ids]

    def _ask(self, asked: list[Request]) -> list[Response]:
        """The inner engine's answers. An engine that can report answers as they finish (`generate_iter`)
        gets them stored in small batches as they come, so a killed run keeps what it paid for."""
        if not hasattr(self.inner, "generate_iter"):
            return self.inner.generate(asked)
        answers: list[Response | None] = [None] * len(asked)
        pending, last = [], time.monotonic()
        for index, answer in self.inner.generate_iter(asked):
            call_id = asked[index].call_id(self.name, self.model, self.revision)
            answers[index] = answer if answer.call_id == call_id else replace(answer, call_id=call_id)
            pending.append(index)
            if len(pending) >= 32 or time.monotonic() - last > 0.25:
                self.cache.put_many([(asked[i], answers[i]) for i in pending], engine=self.name, model=self.model,
                                    revision=self.revision)
                pending, last = [], time.monotonic()
        return answers  # the rest is stored by the caller with everything else

    def __repr__(self) -> str:
        return f"CachedEngine({self.inner!r}, {self.cache!r})"


def _row(request: Request, response: Response, engine: str, model: str, revision: str, created_at: str) -> tuple:
    params = {"n": request.n, "temperature": request.temperature, "top_p": request.top_p,
              "max_tokens": request.max_tokens, "seed": request.seed, "stop": list(request.stop),
              "response_schema": request.response_schema}
    transient = response.error is not None and response.transient
    return (request.call_id(engine, model, revision), engine, model, revision, request.prompt_version, request.task,
            json.dumps(list(response.texts), ensure_ascii=False), response.error, int(transient),
            json.dumps(response.usage, default=str), float(response.latency_s), created_at,
            json.dumps(_strip_paths(request.messages), ensure_ascii=False, default=str),
            json.dumps(params, default=str))
