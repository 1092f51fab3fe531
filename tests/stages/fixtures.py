"""Builders shared by the stage tests: real synthetic assets, contexts, engine profiles, fault engines.

Assets are real: scenes of the synthetic world are rendered and go through the `ingest` stage into a
temporary dataset root, so every asset row has a media file and a scene graph. Models come in two
kinds. Profiles of the scripted teacher (`scripted(...)`) go through `EngineRegistry`, the way a
recipe binds them. In-test engines (`FakeEngine`, `Counting`) implement the Engine protocol and are
bound by `Roles`, an object with `.engine(role)`: nothing is patched.
"""

from pathlib import Path
from typing import Callable

import pyarrow as pa

from pipelines.engines import EngineRegistry
from pipelines.engines.base import Request, Response
from pipelines.engines.scripted import ScriptedEngine
from pipelines.sources.synthetic import synthetic_items
from pipelines.stage import SOURCE_ITEMS, StageContext
from pipelines.stages.ingest import ingest
from pipelines.world import CLIP_FAMILIES, FAMILIES, QAItem, knowledge_of, world_from_json
from schemas import make_id

NOISELESS = {"malformed": 0.0, "wrong_answer": 0.0, "invalid_question": 0.0}
SIZE = 96  # the smallest legible scene: rendering and hashing stay cheap


def scripted(model: str = "scripted-teacher", **noise: float) -> dict:
    """A scripted-teacher profile, noiseless except for the kinds given (0 = never, 1 = always)."""
    return {"engine": "scripted", "model": model, "noise": {**NOISELESS, **noise}}


def registry(root: Path, **profiles: dict) -> EngineRegistry:
    return EngineRegistry(profiles, home=root)


def teachers(root: Path, **profiles: dict) -> EngineRegistry:
    """captioner, reasoner and judge all noiseless scripted teachers, unless overridden."""
    return registry(root, **{"captioner": scripted(), "reasoner": scripted(), "judge": scripted(), **profiles})


def context(stage: str, root: Path, engines=None, **kwargs) -> StageContext:
    return StageContext(run_id="run-test", stage=stage, stage_version=1, config_hash="test", root=root,
                        engines=engines, **kwargs)


def ingest_scenes(root: Path, *, scenes: int = 4, families: list[str] = list(FAMILIES), seed: int = 0) -> pa.Table:
    """Assets of `scenes` rendered synthetic scenes, ingested for real into `root`."""
    items = pa.Table.from_pylist(synthetic_items(families=families, scenes=scenes, seed=seed, size=SIZE),
                                 schema=SOURCE_ITEMS)
    result = ingest(items, context("ingest", root))
    assert result.rejects.num_rows == 0, result.rejects.to_pylist()
    return result.out


def ingest_clips(root: Path, *, clips: int = 3, seed: int = 0) -> pa.Table:
    """Assets of `clips` synthetic clips (round robin over the clip families): each a video and its 8 frames."""
    return ingest_scenes(root, scenes=clips, families=list(CLIP_FAMILIES), seed=seed)


def items_of(assets: pa.Table) -> list[dict]:
    """The images and videos of an assets table (video frames are not items)."""
    return [a for a in assets.to_pylist() if a["parent_asset_id"] is None]


def scene_of(asset: dict):
    """The scene graph of a synthetic image, or of a clip over time."""
    return world_from_json(asset["scene"])


def true_captions(ctx: StageContext, assets: pa.Table, styles=("coarse", "fine")) -> pa.Table:
    """A captions table holding the world's exact captions (what a perfect captioner writes)."""
    rows = [{"caption_id": make_id("caption", a["asset_id"], style), "asset_id": a["asset_id"], "style": style,
             "text": getattr(knowledge_of(scene_of(a)), f"caption_{style}")(scene_of(a))}
            for a in items_of(assets) for style in styles]
    return ctx.rows("captions", rows)


def question_row(asset: dict, item: QAItem) -> dict:
    return {"question_id": make_id("question", [asset["asset_id"]], item.question), "asset_ids": [asset["asset_id"]],
            "question": item.question, "answer": item.answer, "answer_type": item.answer_type,
            "choices": list(item.choices), "category": item.category, "abilities": list(item.abilities),
            "reward_route": "model" if item.answer_type == "des" else "rule", "generator": "world"}


def true_questions(ctx: StageContext, assets: pa.Table, *, types=("mc", "fib", "num", "des"),
                   per_asset: int | None = None) -> pa.Table:
    """A questions table of the world's own items (first `per_asset` of the wanted types per asset)."""
    rows = []
    for asset in items_of(assets):
        scene = scene_of(asset)
        items = [i for i in knowledge_of(scene).qa_items(scene) if i.answer_type in types]
        rows += [question_row(asset, item) for item in items[:per_asset]]
    return ctx.rows("questions", rows)


def attempt(request: Request) -> int:
    """0 for a first call, k for the k-th retry (each retry appends the model's output as an assistant turn)."""
    return sum(1 for m in request.messages if m["role"] == "assistant")


class Roles:
    """Engines bound to roles directly: what `ctx.engines` must offer is `.engine(role)` and `.has(role)`."""

    def __init__(self, **engines):
        self.engines = engines

    def has(self, role: str) -> bool:
        return role in self.engines

    def engine(self, role: str):
        if role not in self.engines:
            raise AssertionError(f"the stage asked for role {role!r}; this test binds only {sorted(self.engines)}")
        return self.engines[role]


class FakeEngine:
    """An engine whose reply to each request is `reply(request)`: a text, a list of texts or a Response."""

    name = "fake"

    def __init__(self, reply: Callable[[Request], str | list[str] | Response], model: str = "fake-model",
                 revision: str = "fake-1"):
        self.reply, self.model, self.revision = reply, model, revision
        self.requests: list[Request] = []

    def generate(self, requests: list[Request]) -> list[Response]:
        responses = []
        for request in requests:
            self.requests.append(request)
            reply = self.reply(request)
            if not isinstance(reply, Response):
                texts = [reply] if isinstance(reply, str) else list(reply)
                reply = Response(texts, request.call_id(self.name, self.model, self.revision))
            responses.append(reply)
        return responses


def failing(error: str = "HTTP 503 from the model server") -> FakeEngine:
    return FakeEngine(lambda request: Response([], request.call_id("fake", "fake-model", "fake-1"), error=error))


class Counting:
    """Wraps an engine and records every request it is sent (to count calls per task)."""

    def __init__(self, inner):
        self.inner, self.requests = inner, []
        self.name, self.model, self.revision = inner.name, inner.model, inner.revision

    def generate(self, requests: list[Request]) -> list[Response]:
        self.requests += requests
        return self.inner.generate(requests)

    def tasks(self) -> list[str]:
        return [r.task for r in self.requests]


def teacher(**noise: float) -> ScriptedEngine:
    """A scripted teacher instance (not through the registry), noiseless except for the kinds given."""
    return ScriptedEngine(noise={**NOISELESS, **noise})


def reasons_by_subject(result) -> dict[str, str]:
    return dict(zip(result.rejects["subject_id"].to_pylist(), result.rejects["reason"].to_pylist()))
