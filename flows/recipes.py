"""Recipes: YAML files in configs/recipes/ naming a dataset, model roles, sources and steps.

`load_recipe(name, overrides)` reads one, applies `--set key=value` overrides, and validates
everything before any work starts: every stage exists, every parameter is one the stage's function
takes and has the right type, every model profile and source exists. All problems are reported in
one `RecipeError`, each naming what exists instead.

Override keys: `dataset`, `shard_size`, `workers`, `seed`, `license`, `models.<role>` (a profile name),
`source.<source>.<param>`, and `<stage>.<param>` for a step of the recipe.

A recipe may end with a `loop:` block: steps run `rounds` times after `steps` (flows/loop.py), each
round training from the policy the round before trained. `--set rounds=N` changes the count, and
`<stage>.<param>` reaches loop steps too. A loop must hold a `grpo` step and, after it, `rescore`.
"""

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from schemas.base import canonical_json, sha256_text
from schemas.errors import RecipeError, did_you_mean

TOP_LEVEL = ("dataset", "description", "models", "source", "steps", "shard_size", "workers", "seed", "loop", "rounds",
             "license")


def configs_dir() -> Path:
    """configs/ of this checkout (or $THINKMILL_CONFIGS)."""
    import os

    return Path(os.environ.get("THINKMILL_CONFIGS") or Path(__file__).resolve().parent.parent / "configs")


def recipe_names() -> list[str]:
    return sorted(p.stem for p in (configs_dir() / "recipes").glob("*.yaml"))


def recipe_license(name: str) -> str | None:
    """The `license` a recipe file states now (None when the recipe or the key is absent): for exports."""
    path = configs_dir() / "recipes" / f"{name}.yaml"
    if not path.exists():
        return None
    value = (yaml.safe_load(path.read_text()) or {}).get("license")
    return None if value is None else str(value)


def model_profile_names() -> list[str]:
    return sorted(p.stem for p in (configs_dir() / "models").glob("*.yaml"))


@dataclass(frozen=True)
class Step:
    index: int
    stage: str
    params: dict  # every parameter of the stage, defaults filled in


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    dataset: str
    models: dict = field(repr=False)        # role -> resolved profile dict
    model_names: dict = field(repr=False)   # role -> profile name
    source: dict = field(repr=False)
    steps: list = field(repr=False)
    shard_size: int = 32
    workers: int = 2
    seed: int = 0
    loop: list = field(default_factory=list, repr=False)  # steps each round repeats, after `steps`
    rounds: int = 0
    license: str | None = None  # the data's licence (an SPDX-style id), for exports; None: not stated

    def resolved(self) -> dict:
        """The recipe as it will run: what the config hash covers and `versions.config` records."""
        resolved = {"recipe": self.name, "dataset": self.dataset, "models": self.models, "source": self.source,
                    "steps": [{s.stage: s.params} for s in self.steps], "seed": self.seed}
        # Optional keys appear only when set, so every other recipe keeps its config hash.
        if self.loop:
            resolved |= {"loop": [{s.stage: s.params} for s in self.loop], "rounds": self.rounds}
        if self.license:
            resolved["license"] = self.license
        return resolved

    @property
    def config_hash(self) -> str:
        return sha256_text(canonical_json(self.resolved()))


def load_recipe(name_or_path: str, overrides: list[str] | tuple = (), *, dataset: str | None = None) -> Recipe:
    path = _find(name_or_path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(where, [f"not valid YAML: {error}"]) from None
    problems: list[str] = []
    raw = _apply_overrides(raw, overrides, problems)
    if dataset:
        raw["dataset"] = dataset
    for key in raw:
        if key not in TOP_LEVEL:
            problems.append(f"unknown top-level key {key!r}; known: {', '.join(TOP_LEVEL)}.{did_you_mean(key, TOP_LEVEL)}")
    steps = _check_steps(raw.get("steps") or [], problems)
    loop, rounds = _check_loop(raw, len(steps), problems)
    models, model_names = _check_models(raw.get("models") or {}, problems)
    source = _check_source(raw.get("source") or {}, problems)
    if not raw.get("dataset"):
        problems.append("no dataset name: add `dataset: <name>` or pass --dataset")
    if problems:
        raise RecipeError(where, problems)
    return Recipe(path.stem, path, str(raw["dataset"]), models, model_names, source, steps,
                  int(raw.get("shard_size", 32)), int(raw.get("workers", 2)), int(raw.get("seed", 0)), loop, rounds,
                  None if raw.get("license") is None else str(raw["license"]))


def _find(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    path = configs_dir() / "recipes" / f"{name_or_path}.yaml"
    if path.exists():
        return path
    known = recipe_names()
    raise RecipeError(str(name_or_path), [f"no such recipe. Known recipes: {', '.join(known)}.{did_you_mean(name_or_path, known)} "
                                          f"(a path to a .yaml file works too)"])


def _step_items(steps) -> list[tuple[str, dict]]:
    items = []
    for entry in steps:
        if isinstance(entry, str):
            items.append((entry, {}))
        elif isinstance(entry, dict) and len(entry) == 1:
            (stage, params), = entry.items()
            items.append((stage, dict(params or {})))
        else:
            items.append((repr(entry), None))
    return items


def _apply_overrides(raw: dict, overrides, problems: list[str]) -> dict:
    raw = json.loads(json.dumps(raw))  # a deep copy we may edit
    step_names = [stage for stage, _ in _step_items(raw.get("steps") or []) + _step_items(_loop_entries(raw))]
    for override in overrides:
        if "=" not in override:
            problems.append(f"--set {override!r}: expected key=value, e.g. --set caption.styles=[coarse]")
            continue
        key, text = override.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        parts = key.strip().split(".")
        head = parts[0]
        if head in ("dataset", "shard_size", "workers", "seed", "rounds", "license") and len(parts) == 1:
            raw[head] = value
        elif head == "models" and len(parts) == 2:
            raw.setdefault("models", {})[parts[1]] = value
        elif head == "source" and len(parts) == 3:
            raw.setdefault("source", {}).setdefault(parts[1], {})[parts[2]] = value
        elif head in step_names and len(parts) == 2 and not _is_stage_param(head, parts[1]):
            problems.append(f"--set {key}: {head} has no parameter {parts[1]!r}.{did_you_mean(parts[1], _stage_params(head))} "
                            f"Valid keys: {', '.join(_valid_keys(raw))}")
        elif head in step_names and len(parts) == 2:
            for block, entries in (("steps", raw.get("steps") or []), ("loop", _loop_entries(raw))):
                for i, entry in enumerate(entries):
                    stage, params = _step_items([entry])[0]
                    if stage == head:
                        raw[block][i] = {stage: {**(params or {}), parts[1]: value}}
        else:
            problems.append(f"--set {key}: unknown key. Valid keys: {', '.join(_valid_keys(raw))}")
    return raw


def _stage_params(stage: str) -> list[str]:
    from pipelines.stages import STAGES

    return list(STAGES[stage].params) if stage in STAGES else []


def _is_stage_param(stage: str, param: str) -> bool:
    from pipelines.stages import STAGES

    return stage not in STAGES or param in STAGES[stage].params


def _valid_keys(raw: dict) -> list[str]:
    from pipelines.stages import STAGES

    keys = ["dataset", "shard_size", "workers", "seed", "license"] + (["rounds"] if _loop_entries(raw) else [])
    keys += [f"models.{role}" for role in (raw.get("models") or {})]
    keys += [f"source.{name}.<param>" for name in (raw.get("source") or {})]
    for stage, _ in _step_items(raw.get("steps") or []) + _step_items(_loop_entries(raw)):
        if stage in STAGES:
            keys += [f"{stage}.{p}" for p in STAGES[stage].params if f"{stage}.{p}" not in keys]
    return keys


def _check_steps(steps, problems: list[str], *, first_index: int = 0, label: str = "step") -> list[Step]:
    from pipelines.stages import STAGES

    resolved = []
    for index, (stage, params) in enumerate(_step_items(steps)):
        where = f"{label} {index + 1}"
        if params is None:
            problems.append(f"{where}: expected `- stage_name: {{param: value}}`, got {stage}")
            continue
        if stage not in STAGES:
            problems.append(f"{where}: unknown stage {stage!r}. Known stages: {', '.join(sorted(STAGES))}.{did_you_mean(stage, STAGES)}")
            continue
        declared = STAGES[stage].params
        full = {}
        for name, parameter in declared.items():
            if name in params:
                try:
                    full[name] = TypeAdapter(parameter.annotation).validate_python(params[name])
                except ValidationError as error:
                    message = error.errors()[0]["msg"]
                    problems.append(f"{where} ({stage}): parameter {name}={params[name]!r}: {message} (expected {_type_name(parameter.annotation)})")
            elif parameter.default is inspect.Parameter.empty:
                problems.append(f"{where} ({stage}): parameter {name!r} is required")
            else:
                full[name] = parameter.default
        for name in params:
            if name not in declared:
                problems.append(f"{where} ({stage}): unknown parameter {name!r}. {stage} takes: "
                                f"{', '.join(declared) or 'no parameters'}.{did_you_mean(name, declared)}")
        resolved.append(Step(first_index + index, stage, full))
    if not resolved and not problems and label == "step":
        problems.append("the recipe has no steps")
    return resolved


def _loop_entries(raw: dict) -> list:
    entries = raw.get("loop")
    return entries if isinstance(entries, list) else []


def _check_loop(raw: dict, first_index: int, problems: list[str]) -> tuple[list[Step], int]:
    """The `loop:` steps and `rounds`. A round trains a policy (`grpo`) and re-scores with it (`rescore`,
    after `grpo`): without both, the next round would select on the same policy's rows again."""
    example = "see configs/recipes/loop-grpo.yaml"
    if "loop" not in raw:
        if "rounds" in raw:
            problems.append(f"rounds: {raw['rounds']!r}, but the recipe has no `loop:` block of steps to repeat ({example})")
        return [], 0
    if not isinstance(raw["loop"], list) or not raw["loop"]:
        problems.append(f"loop: expected a list of steps, e.g. [select, grpo, rescore] with their parameters ({example})")
        return [], 0
    loop = _check_steps(raw["loop"], problems, first_index=first_index, label="loop step")
    try:
        rounds = TypeAdapter(int).validate_python(raw.get("rounds", 1), strict=True)
        if rounds < 0:
            raise ValueError
    except (ValidationError, ValueError):
        problems.append(f"rounds: {raw.get('rounds')!r} is not a whole number of rounds (0 or more)")
        rounds = 0
    stages = [step.stage for step in loop]
    if loop and "grpo" not in stages:
        problems.append(f"loop: no grpo step; each round trains the policy the next round selects with ({example})")
    elif loop and ("rescore" not in stages or stages.index("rescore") < stages.index("grpo")):
        problems.append(f"loop: no rescore step after grpo; the new policy must score the questions before the next round "
                        f"selects on them ({example})")
    return loop, rounds


def _check_models(models: dict, problems: list[str]) -> tuple[dict, dict]:
    resolved, names = {}, {}
    known = model_profile_names()
    for role, profile in models.items():
        if isinstance(profile, dict):  # an inline profile
            resolved[role], names[role] = profile, "inline"
            continue
        path = configs_dir() / "models" / f"{profile}.yaml"
        if not path.exists():
            problems.append(f"models.{role}: no model profile {profile!r}. Profiles: {', '.join(known)}.{did_you_mean(profile, known)}")
            continue
        resolved[role], names[role] = yaml.safe_load(path.read_text()), str(profile)
    return resolved, names


def _check_source(source: dict, problems: list[str]) -> dict:
    from pipelines.sources import SOURCES

    for name, params in source.items():
        if name not in SOURCES:
            problems.append(f"source {name!r} is unknown. Sources: {', '.join(sorted(SOURCES))}.{did_you_mean(name, SOURCES)}")
            continue
        declared = {n: p for n, p in inspect.signature(SOURCES[name]).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        for param in params or {}:
            if param not in declared:
                problems.append(f"source.{name}: unknown parameter {param!r}. It takes: {', '.join(declared)}.{did_you_mean(param, declared)}")
    return source


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
