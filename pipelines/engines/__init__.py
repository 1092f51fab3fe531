"""Model engines behind one interface, and the registry that binds recipe roles to them.

A recipe names roles (`captioner`, `reasoner`, `judge`, `policy`) and binds each to a model profile
(`configs/models/<name>.yaml`: engine kind, model, sampling defaults). Stages ask `ctx.engine(role)`.
Loaded engines are kept per process (a model loads once, not once per shard), keyed by profile.
"""

import json
import threading
from pathlib import Path

from pipelines.engines.base import Engine, Request, Response
from schemas.base import sha256_text
from schemas.errors import UnknownEngine

ENGINE_KINDS = ("scripted", "hf")

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
    raise UnknownEngine(str(kind), list(ENGINE_KINDS))


def resolve_model(model: str, home: Path) -> str:
    """`local:<name>` names a model thinkmill builds on this machine (never downloaded)."""
    if model.startswith("local:"):
        from pipelines.policy.local import ensure_local_model

        return str(ensure_local_model(model.removeprefix("local:"), Path(home)))
    return model


class EngineRegistry:
    """Roles → engines for one run. Stages see it as `ctx.engines`."""

    def __init__(self, profiles: dict[str, dict], home: Path):
        self.profiles, self.home = profiles, Path(home)

    def engine(self, role: str) -> Engine:
        if role not in self.profiles:
            raise UnknownEngine(role, sorted(self.profiles))
        return self._cached(self.profiles[role])

    def engine_for_model(self, model_dir: str, *, like: str = "policy") -> Engine:
        """An engine for a checkpoint on disk (a policy trained in this run), with `like`'s options."""
        return self._cached({**self.profiles[like], "model": str(model_dir)})

    def sampling(self, role: str) -> dict:
        return dict(self.profiles.get(role, {}).get("sampling", {}))

    def fingerprint(self, role: str) -> str:
        """Identity of the model behind a role, for cache keys: engine kind, model, revision, profile."""
        engine = self.engine(role)
        return sha256_text(json.dumps([engine.name, engine.model, engine.revision, self.profiles[role]], sort_keys=True, default=str))

    def _cached(self, profile: dict) -> Engine:
        key = json.dumps(profile, sort_keys=True, default=str)
        with _loading:
            if key not in _loaded:
                _loaded[key] = build_engine(profile, home=self.home)
            return _loaded[key]


__all__ = ["Engine", "EngineRegistry", "Request", "Response", "build_engine"]
