"""Sources: where the items that `ingest` reads come from. Each yields rows of `SOURCE_ITEMS`.

A source is a function with keyword-only parameters returning a list of dicts (one per file or
image, bytes in `content` or a file in `path`). A recipe's `source:` section names one or more of
them with their parameters:

    source:
      synthetic:    {families: [counting], scenes: 200, seed: 0}
      image_folder: {path: ~/photos}

`source_items` checks every name and parameter against the functions' signatures (all problems in
one `RecipeError`), runs them in the order given and returns one table for `ingest`.
"""

import importlib
import inspect
from collections import Counter
from typing import Callable

import pyarrow as pa

from pipelines.sources.hf_dataset import hf_dataset_items
from pipelines.sources.image_folder import image_folder_items
from pipelines.stage import SOURCE_ITEMS
from schemas.errors import RecipeError, did_you_mean


class _Lazy:
    """A source imported on first use (its module is heavy, or may not be importable everywhere).

    `inspect.signature` sees the real function's signature, so recipes are checked against it.
    """

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def _fn(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.name)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._fn())

    def __call__(self, **params) -> list[dict]:
        return self._fn()(**params)


SOURCES: dict[str, Callable[..., list[dict]]] = {
    "hf_dataset": hf_dataset_items,
    "image_folder": image_folder_items,
    "synthetic": _Lazy("pipelines.sources.synthetic", "synthetic_items"),
}


def source_items(spec: dict) -> pa.Table:
    """One SOURCE_ITEMS table from a recipe's `source:` section ({name: {param: value}})."""
    check_spec(spec)
    per_source = {name: SOURCES[name](**(params or {})) for name, params in spec.items()}
    seen = Counter(ref for items in per_source.values() for ref in {item["source_ref"] for item in items})
    rows = []
    for name, items in per_source.items():
        refs = [item["source_ref"] for item in items]
        if len(set(refs)) != len(refs):  # a bug in the source: ingest could not account for its items
            twice = sorted(ref for ref, n in Counter(refs).items() if n > 1)
            raise ValueError(f"source {name!r} yielded the same source_ref more than once: {twice[:5]}")
        for item in items:
            ref = item["source_ref"]
            # Two sources naming an item the same way: prefix both, so every ref stays unique.
            rows.append({**item, "source": name, "source_ref": f"{name}:{ref}" if seen[ref] > 1 else ref})
    return pa.Table.from_pylist(rows, schema=SOURCE_ITEMS)


def check_spec(spec: dict) -> None:
    """Raise one RecipeError listing every unknown source, unknown parameter or missing parameter."""
    if not isinstance(spec, dict) or not spec:
        raise RecipeError("source", [f"expected a mapping of source name to parameters, got {spec!r}; "
                                     f"sources are: {', '.join(SOURCES)}"])
    problems = []
    for name, params in spec.items():
        if name not in SOURCES:
            problems.append(f"unknown source {name!r}; sources are: {', '.join(SOURCES)}.{did_you_mean(name, SOURCES)}")
            continue
        if params is not None and not isinstance(params, dict):
            problems.append(f"source {name!r}: expected a mapping of parameters, got {params!r}")
            continue
        accepted = {p.name: p for p in inspect.signature(SOURCES[name]).parameters.values()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY}
        valid = ", ".join(accepted) or "none"
        for key in params or {}:
            if key not in accepted:
                problems.append(f"source {name!r} has no parameter {key!r}; its parameters are: {valid}."
                                f"{did_you_mean(key, accepted)}")
        for key, parameter in accepted.items():
            if parameter.default is inspect.Parameter.empty and key not in (params or {}):
                problems.append(f"source {name!r} needs parameter {key!r}; its parameters are: {valid}")
    if problems:
        raise RecipeError("source", problems)
