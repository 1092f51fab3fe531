"""The dataset card (README.md) of a Hub export: YAML metadata the Hub reads, then a page for people.

Metadata (`huggingface_hub.DatasetCardData`): `license` (given, else the recipe's, else "other":
never guessed; see `hub.write_folder`), `size_categories` from the number of samples, `task_categories`, `source_datasets`
("original" for synthetic scenes and image folders, "extended" when images came from another
dataset), `configs` with their `data_files` (so `load_dataset` finds every config; `samples` is the
default), `dataset_info` (features, split sizes in rows and bytes), and a `thinkmill` block with the
figures below as data: verification pass rates, difficulty histograms per policy, rejects per reason,
sources, and lineage (runs, recipe, config hash, models, stage versions, policies).

Models served from a local folder are named by the folder's name, not its path on this machine.
"""

from pathlib import Path

from stores.exports import facts

TASK_CATEGORIES = ["visual-question-answering"]
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
EXTENDING_SOURCES = {"hf_dataset"}  # sources whose images come from another dataset


def size_category(n_rows: int) -> str:
    """The Hub's size bucket for `n_rows` examples.

    >>> size_category(25), size_category(1000), size_category(250_000)
    ('n<1K', '1K<n<10K', '100K<n<1M')
    >>> size_category(5_000_000_000)
    'n>1B'
    """
    for limit, name in SIZE_CATEGORIES:
        if n_rows < limit:
            return name
    return "n>1B"


def public_model_name(model: str) -> str:
    """A model as the card names it: a local folder by its name (paths on this machine mean nothing there).

    >>> public_model_name("/home/me/models/tiny-llava-51e2"), public_model_name("Qwen/Qwen2.5-VL-7B-Instruct")
    ('tiny-llava-51e2 (local)', 'Qwen/Qwen2.5-VL-7B-Instruct')
    """
    return f"{Path(model).name} (local)" if Path(model).is_absolute() else model


def card_metadata(lake, export, *, license: str | None, recipe_license: str | None = None) -> dict:
    """Everything the YAML header holds, as plain data."""
    version = export.version
    lineage = facts.lineage(lake, version)
    for model in lineage["models"]:
        model["model"] = public_model_name(model["model"])
    sources = facts.sources(lake, version)
    source_names = {row["source"] for row in sources}
    n_samples = export.configs["samples"].n_rows if "samples" in export.configs else 0
    configs = [{"config_name": name, **({"default": True} if name == "samples" else {}),
                "data_files": [{"split": "train", "path": f"data/{name}/train-*"}]} for name in export.configs]
    dataset_info = [{"config_name": name, "features": config.features._to_yaml_list(),
                     "splits": [{"name": "train", "num_bytes": config.num_bytes, "num_examples": config.n_rows}],
                     "download_size": config.download_size, "dataset_size": config.num_bytes}
                    for name, config in export.configs.items()]
    return {
        "pretty_name": f"{export.dataset} (thinkmill version {version})",
        "license": license or lineage["license"] or recipe_license or "other",
        "size_categories": [size_category(n_samples)],
        "task_categories": TASK_CATEGORIES,
        "annotations_creators": ["machine-generated"],
        "source_datasets": sorted({"extended" if name in EXTENDING_SOURCES else "original" for name in source_names}),
        "tags": ["thinkmill", "multimodal-reasoning", "chain-of-thought"] + (["synthetic"] if "synthetic" in source_names else []),
        "configs": configs,
        "dataset_info": dataset_info,
        "thinkmill": {
            "dataset": export.dataset, "version": version, "recipe": lineage["recipe"], "run_id": lineage["run_id"],
            "config_hash": lineage["config_hash"], "sources": sources,
            "verification": facts.verification(lake, version),
            "difficulty": facts.difficulty_histograms(lake, version),
            "rejects": {row["reason"]: row["n"] for row in facts.rejects_by_reason(lake, version, examples=0)},
            "not_exported": export.skipped,
            "lineage": {key: lineage[key] for key in ("runs", "models", "stage_versions", "policies")},
        },
    }


def write_card(lake, export, *, license: str | None, recipe_license: str | None = None, repo_id: str | None) -> Path:
    from huggingface_hub import DatasetCard, DatasetCardData

    metadata = card_metadata(lake, export, license=license, recipe_license=recipe_license)
    data = DatasetCardData(**metadata)
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{card_body(metadata, export, repo_id=repo_id)}")
    path = Path(export.folder) / "README.md"
    card.save(path)
    return path


def card_body(metadata: dict, export, *, repo_id: str | None) -> str:
    info = metadata["thinkmill"]
    where = repo_id or "path/to/this/folder"
    lines = [f"# {metadata['pretty_name']}", "",
             f"Version {info['version']} of the thinkmill dataset `{info['dataset']}`, written by the recipe "
             f"`{info['recipe']}` (run `{info['run_id']}`, config hash `{info['config_hash'][:12]}`). Questions about "
             f"images with reference answers, chains of thought, verifier verdicts, policy rollouts and difficulty per "
             f"policy; every row carries its lineage (run, stage, stage version, config hash, model).", "",
             "```python", "from datasets import load_dataset", "",
             f'samples = load_dataset("{where}", "samples", split="train")   # images decoded as PIL images',
             f'rollouts = load_dataset("{where}", "rollouts", split="train")', "```", "",
             "## Configs", "", "| config | rows | files | what |", "|---|---:|---:|---|"]
    from stores.exports.hub import CONFIGS

    for name, config in export.configs.items():
        lines.append(f"| `{name}`{' (default)' if name == 'samples' else ''} | {config.n_rows} | {len(config.files)} | {CONFIGS[name].about} |")
    for name, why in export.skipped.items():
        lines.append(f"| `{name}` | 0 | 0 | not exported: {why} |")
    lines += ["", "## Sources", "", "| source | kind | assets |", "|---|---|---:|"]
    lines += [f"| {row['source']} | {row['kind']} | {row['n']} |" for row in info["sources"]]
    verification = info["verification"]
    lines += ["", "## Verification", "",
              f"{verification['n_passed']} of {verification['n']} verdicts passed ({_percent(verification['pass_rate'])}).", "",
              "| verifier | verdicts | passed | pass rate |", "|---|---:|---:|---:|"]
    lines += [f"| {row['verifier']} | {row['n']} | {row['n_passed']} | {_percent(row['pass_rate'])} |" for row in verification["by_verifier"]]
    lines += ["", "| answer type | verdicts | passed | pass rate |", "|---|---:|---:|---:|"]
    lines += [f"| {row['answer_type']} | {row['n']} | {row['n_passed']} | {_percent(row['pass_rate'])} |" for row in verification["by_answer_type"]]
    lines += ["", "## Difficulty", "",
              "Pass rate of each policy's rollouts per question (with the image), in bins of 0.1. Difficulty is always "
              "for a policy: a question hard for the base policy may be easy after GRPO."]
    for row in info["difficulty"]:
        lines += ["", f"**{row['policy_id']}** ({row['method']}): {row['n_scored']} questions scored, mean pass rate "
                      f"{_percent(row['mean_pass_rate'])}, {row['n_selected']} selected.", "", "```"]
        edges, top = row["bin_edges"], max(row["counts"]) or 1
        for index, count in enumerate(row["counts"]):
            bar = "█" * round(30 * count / top)
            lines.append(f"{edges[index]:.1f}-{edges[index + 1]:.1f} {bar} {count}")
        lines.append("```")
    lines += ["", "## Rejects", "", "What the stages refused, by reason (`<stage>.<slug>`); the `rejects` config has every row.", "",
              "| reason | rows |", "|---|---:|"]
    lines += [f"| `{reason}` | {n} |" for reason, n in info["rejects"].items()]
    lineage = info["lineage"]
    lines += ["", "## Lineage", "", "| version | recipe | run | config hash | committed |", "|---:|---|---|---|---|"]
    lines += [f"| {run['version']} | {run['recipe']} | {run['run_id']} | `{run['config_hash'][:12]}` | {run['created_at'][:19]} |"
              for run in lineage["runs"]]
    lines += ["", "| model | revision | prompt versions | tables |", "|---|---|---|---|"]
    lines += [f"| {m['model']} | {(m['model_revision'] or '')[:12]} | {', '.join(m['prompt_versions'])} | {', '.join(m['tables'])} |"
              for m in lineage["models"]]
    lines += ["", "Stage versions: " + ", ".join(f"{stage} v{'/'.join(map(str, v))}" for stage, v in lineage["stage_versions"].items()) + "."]
    if lineage["policies"]:
        lines += ["", "Policies: " + ", ".join(f"`{p['policy_id']}` ({p['kind'] or 'base'})" for p in lineage["policies"]) + "."]
    lines += ["", "## Licence", ""]
    if metadata["license"] == "other":
        lines.append("No licence was given, neither at export (`flow export hub --license`) nor in the recipe: `other` "
                     "stands in until the owner states the terms. Check them before using this data.")
    else:
        lines.append(f"`{metadata['license']}`.")
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
