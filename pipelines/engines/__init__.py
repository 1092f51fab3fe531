"""Model engines behind one interface, and the registry that binds recipe roles to them.

A recipe names roles (`captioner`, `reasoner`, `judge`, `policy`) and binds each to a model profile
(`configs/models/<name>.yaml`: engine kind, model, sampling defaults). Stages ask `ctx.engine(role)`.
Loaded engines are kept per process (a model loads once, not once per shard), keyed by profile.
Given a `CallCache`, the registry hands out every engine wrapped in a `CachedEngine`, so each call
is answered from the dataset's call cache when it can be and stored there when it cannot.
"""

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.engines.base import Engine, Request, Response
from schemas.base import sha256_text
from schemas.errors import UnknownEngine

if TYPE_CHECKING:
    from stores.call_cache import CallCache

ENGINE_KINDS = ("scripted", "hf", "openai", "vllm")

_loaded: dict[str, Engine] = {}
_loading = threading.Lock()


def build_engine(profile: dict, *, home: Path) -> Engine:
    """A new engine for a profile dict (see configs/models/). Imports heavy libraries only when chosen."""
    kind = profile.get("engine")
    if kind == "scripted":
        from pipelines.engines.scripted import ScriptedEngine

        return ScriptedEngine(profile.get("model", "scripted-teacher"), noise=profile.get("noise"))
    if kind == "hf":
        from pipelines.engines.hf import HFEngine

        return HFEngine(resolve_model(profile["model"], home), **profile.get("options", {}))
    if kind == "openai":
        from pipelines.engines.openai_compatible import engine_from_profile

        return engine_from_profile(profile)
    if kind == "vllm":
        from pipelines.engines.vllm_inprocess import VLLMEngine

        return VLLMEngine(resolve_model(profile["model"], home), **profile.get("options", {}))
    raise UnknownEngine(str(kind), list(ENGINE_KINDS))


def resolve_model(model: str, home: Path) -> str:
    """`local:<name>` names a model thinkmill builds on this machine (never downloaded)."""
    if model.startswith("local:"):
        from pipelines.policy.local import ensure_local_model

        return str(ensure_local_model(model.removeprefix("local:"), Path(home)))
    return model


class EngineRegistry:
    """Roles → engines for one run. Stages see it as `ctx.engines`."""

    def __init__(self, profiles: dict[str, dict], home: Path, cache: "CallCache | None" = None):
        """`cache`: the dataset's call cache, for every engine to go through; None calls models directly."""
        self.profiles, self.home, self.cache = profiles, Path(home), cache
        self._wrapped: dict[str, Engine] = {}  # profile key -> CachedEngine, so its counters span the run

    def has(self, role: str) -> bool:
        """Whether the recipe binds `role` (optional roles, such as `tiebreaker`, may be left out)."""
        return role in self.profiles

    def engine(self, role: str) -> Engine:
        if role not in self.profiles:
            raise UnknownEngine(role, sorted(self.profiles))
        return self._cached(self.profiles[role])

    def engine_for_model(self, model_dir: str, *, like: str = "policy") -> Engine:
        """An engine for a checkpoint on disk (a policy trained in this run), with `like`'s options."""
        return self._cached({**self.profiles[like], "model": str(model_dir)})

    def rebind(self, role: str, model_dir: str) -> "EngineRegistry":
        """The same roles, with `role` bound to the checkpoint in `model_dir` (a loop round trains from the
        policy the round before trained). Loaded models and call counts are shared with this registry."""
        rebound = EngineRegistry({**self.profiles, role: {**self.profiles[role], "model": str(model_dir)}}, self.home, self.cache)
        rebound._wrapped = self._wrapped  # one set of call counters for the whole run
        return rebound

    def sampling(self, role: str) -> dict:
        return dict(self.profiles.get(role, {}).get("sampling", {}))

    def fingerprint(self, role: str) -> str:
        """Identity of the model behind a role, for cache keys: engine kind, model, revision, profile."""
        engine = self.engine(role)
        return sha256_text(json.dumps([engine.name, engine.model, engine.revision, self.profiles[role]], sort_keys=True, default=str))

    def cache_counts(self) -> dict[str, int]:
        """Requests answered from the call cache (`hits`) and calls made to models (`misses`) so far."""
        engines = list(self._wrapped.values())
        return {"hits": sum(e.hits for e in engines), "misses": sum(e.misses for e in engines)}

    def _cached(self, profile: dict) -> Engine:
        key = json.dumps(profile, sort_keys=True, default=str)
        with _loading:
            if key not in _loaded:
                _loaded[key] = build_engine(profile, home=self.home)
            if self.cache is None:
                return _loaded[key]
            if key not in self._wrapped:
                from stores.call_cache import CachedEngine

                self._wrapped[key] = CachedEngine(_loaded[key], self.cache)
            return self._wrapped[key]

    def __getstate__(self) -> dict:  # loaded models stay in their process; a worker loads its own
        return {"profiles": self.profiles, "home": self.home, "cache": self.cache, "_wrapped": {}}


__all__ = ["Engine", "EngineRegistry", "Request", "Response", "build_engine"]
