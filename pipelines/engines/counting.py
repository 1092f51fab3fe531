"""Model calls and tokens of one stage on one shard: what `stage_stats` records per stage.

The engines of a run are shared: two stages that bind the same profile get the same (cached) engine,
and a stage's shards run at once in threads (or in other processes under Ray), so an engine's own
counters cannot say which stage asked. The flow therefore hands each shard task its own view of the
registry, `CountedEngines`, whose engines count into one `CallTally` per task; the task returns the
tally with its output, and the flow adds up the tallies of the shards it computed.

A response the call cache answered carries `usage["cached"] = True` (stores/call_cache.py): it counts
as cached, every other response as a call made. Tokens are those of the calls made, as the engine
reports them (`usage["prompt_tokens"]`, `usage["completion_tokens"]`): what this run paid for.
"""

import threading
from dataclasses import dataclass, field


@dataclass
class CallTally:
    """Requests a stage sent, split into calls made and answers replayed, and the tokens of those made."""

    n_calls_made: int = 0
    n_calls_cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, responses) -> None:
        made = [r for r in responses if not r.usage.get("cached")]
        with self._lock:
            self.n_calls_made += len(made)
            self.n_calls_cached += len(responses) - len(made)
            self.prompt_tokens += sum(int(r.usage.get("prompt_tokens") or 0) for r in made)
            self.completion_tokens += sum(int(r.usage.get("completion_tokens") or 0) for r in made)

    def to_dict(self) -> dict[str, int]:
        return {"n_calls_made": self.n_calls_made, "n_calls_cached": self.n_calls_cached,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


def add_tallies(tallies: list[dict]) -> dict[str, int]:
    """The sum of `CallTally.to_dict()`s.

    >>> add_tallies([{"n_calls_made": 2, "prompt_tokens": 10}, {"n_calls_made": 1, "n_calls_cached": 3}])
    {'n_calls_made': 3, 'n_calls_cached': 3, 'prompt_tokens': 10, 'completion_tokens': 0}
    """
    total = CallTally().to_dict()
    for tally in tallies:
        for key in total:
            total[key] += int(tally.get(key) or 0)
    return total


class CountingEngine:
    """An engine that adds every response it hands back to a tally. Identity and all else pass through."""

    def __init__(self, inner, tally: CallTally):
        self.inner, self.tally = inner, tally

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def revision(self) -> str:
        return self.inner.revision

    def generate(self, requests):
        responses = self.inner.generate(requests)
        self.tally.add(responses)
        return responses

    def __getattr__(self, attribute):  # engine-specific extras (a model path, a tokenizer) pass through
        return getattr(self.inner, attribute)


class CountedEngines:
    """A registry as one shard task sees it: the same engines, each counting into this task's tally."""

    def __init__(self, registry):
        self.registry, self.tally = registry, CallTally()

    def engine(self, role: str) -> CountingEngine:
        return CountingEngine(self.registry.engine(role), self.tally)

    def engine_for_model(self, model_dir: str, **options) -> CountingEngine:
        return CountingEngine(self.registry.engine_for_model(model_dir, **options), self.tally)

    def __getattr__(self, attribute):  # has, sampling, fingerprint, profiles, ...
        return getattr(self.registry, attribute)
