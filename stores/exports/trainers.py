"""Trainer exports: one dataset version as the files TRL, EasyR1/verl or LLaMA-Factory read.

Which rows. By default the *selected* items of the version: questions with a `difficulty` row marked
selected, for any policy (`policy_id` narrows it to one policy's selection, e.g. the last round's of
a loop). `all_questions` takes every question that passed verification instead. Held-out questions
(the `splits` table) are never exported: they are what policies are measured on. A question shows
one image per asset it names; a video is its frames in one contact sheet, as the policy sees it in
rollouts and GRPO.

Formats, and where the images go (as each trainer expects them):
- `trl`: `train.parquet` with `prompt` (the policy's chat, one `{"type": "image"}` per image),
  `images`, and the columns the rewards read (`solution`, `answer_type`, `choices`), plus
  `question_id`. Images embedded (a list of `datasets.Image`, PIL images after `load_dataset`):
  GRPOTrainer's `images` column.
- `easyr1`: `train.parquet` with exactly `problem` (a `<image>` marker per image, then the
  question), `answer` and `images`, and `format_prompt.jinja` (our answer format). Images embedded,
  as in EasyR1's example sets: its dataset reads the bytes, no `image_dir` needed.
- `llamafactory`: `<name>.json` in sharegpt form (`conversations` human/gpt, `images`, `system`) and
  its entry in `dataset_info.json` (other entries there are kept). Images written to `images/`,
  paths relative to the folder, which is LLaMA-Factory's `dataset_dir`.

The LLaMA-Factory export is for cold-start SFT: the gpt turn is the question's verified chain of
thought (the `sft_examples` view as of the version: refined, else modality-bridged, else raw) in
`<think>…</think><answer>…</answer>`; a question without one is skipped, and counted.
"""

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.answers import has_think_answer_format
from pipelines.policy.prompt import SYSTEM_PROMPT, question_text, trl_prompt
from pipelines.visuals import Visuals
from schemas.errors import ExportError, LakeError, did_you_mean
from stores.lake import Lake

COT_PREFERENCE = ("refined", "bridged", "raw")  # the SFT target when a question has several verified CoTs


@dataclass(frozen=True)
class ExportImage:
    name: str   # sha256 of the bytes + suffix: the same picture is one file
    data: bytes


@dataclass
class Item:
    question: dict
    images: list[ExportImage]
    cot: dict | None = None  # the verified CoT an SFT example teaches, if any


@dataclass
class Written:
    files: list[Path]
    n_rows: int
    images: str
    skipped: dict[str, int] = field(default_factory=dict)
    load_with: str = ""


def export_trainer(lake: Lake, output: Path, *, format: str, version: int | None = None, all_questions: bool = False,
                   policy_id: str | None = None) -> dict:
    """Write version `version` (default: the latest) of the dataset for a trainer into `output`; say what was written."""
    if format not in FORMATS:
        raise ExportError(f"unknown trainer format {format!r}; formats: {', '.join(FORMATS)}.{did_you_mean(format, FORMATS)}")
    if version is None:
        version = lake.current_version()
        if version is None:
            raise ExportError(f"dataset {lake.root.name!r} has no version yet; build one with `flow run build-wethink --dataset {lake.root.name}`")
    lake.table("versions", version=version)  # an unknown version raises UnknownVersion, listing the known ones
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output} is a file; give a folder (it is created if absent)")
    question_ids = chosen_questions(lake, version, all_questions=all_questions, policy_id=policy_id)
    output.mkdir(parents=True, exist_ok=True)
    written = FORMATS[format](items(lake, version, question_ids), output, name=f"thinkmill_{lake.root.name}_v{version}")
    return {"format": format, "dataset": lake.root.name, "version": version, "output": str(output),
            "rows": "every verified question" if all_questions else f"selected items{f' of {policy_id}' if policy_id else ''}",
            "n_questions": len(question_ids), "n_rows": written.n_rows, "images": written.images, "skipped": written.skipped,
            "files": [str(f) for f in written.files], "load_with": written.load_with}


# ---- which rows ------------------------------------------------------------------------------------

def chosen_questions(lake: Lake, version: int, *, all_questions: bool, policy_id: str | None) -> list[str]:
    """Question ids to export, sorted: selected (or verified) ones, never held-out ones."""
    at = f" AT (VERSION => {int(version)})"
    held_out = _held_out(lake, at)
    if all_questions:
        found = {r["question_id"] for r in lake.sql(f"SELECT DISTINCT question_id FROM verdicts{at} WHERE passed").to_pylist()}
        if not found - held_out:
            raise ExportError(f"version {version} of {lake.root.name!r} has no verified question to export")
        return sorted(found - held_out)
    if policy_id is not None:
        known = [r["policy_id"] for r in lake.sql(f"SELECT DISTINCT policy_id FROM difficulty{at} ORDER BY 1").to_pylist()]
        if policy_id not in known:
            raise ExportError(f"no difficulty rows for policy {policy_id!r} at version {version}; policies: "
                              f"{', '.join(known) or 'none'}.{did_you_mean(policy_id, known)}")
    condition = "selected" + (f" AND policy_id = '{policy_id.replace(chr(39), chr(39) * 2)}'" if policy_id else "")
    found = {r["question_id"] for r in lake.sql(f"SELECT DISTINCT question_id FROM difficulty{at} WHERE {condition}").to_pylist()}
    if not found - held_out:
        with_selection = [v["version"] for v in lake.versions()
                          if lake.sql(f"SELECT count(*) AS n FROM difficulty AT (VERSION => {v['version']}) WHERE selected").to_pylist()[0]["n"]]
        raise ExportError(f"version {version} of {lake.root.name!r} has no selected items{f' for {policy_id}' if policy_id else ''} "
                          f"(no select step ran, or it selected nothing). Versions with a selection: "
                          f"{', '.join(map(str, with_selection)) or 'none'}; or export every verified question with --all")
    return sorted(found - held_out)


def _held_out(lake: Lake, at: str) -> set[str]:
    try:
        return {r["question_id"] for r in lake.sql(f"SELECT question_id FROM splits{at} WHERE split = 'held_out'").to_pylist()}
    except LakeError:  # a version written before the splits table existed holds none
        return set()


def items(lake: Lake, version: int, question_ids: list[str]) -> list[Item]:
    """The questions with their images (bytes) and their preferred verified CoT, in `question_ids` order."""
    wanted = set(question_ids)
    questions = {q["question_id"]: q for q in lake.table("questions", version=version).to_pylist() if q["question_id"] in wanted}
    visuals = Visuals.of(lake.table("assets", version=version).to_pylist())
    asset_by_id = {a["asset_id"]: a for a in visuals.items}
    passed = {v["subject_id"] for v in lake.table("verdicts", version=version).to_pylist() if v["passed"]}
    cots: dict[str, list[dict]] = {}
    for cot in lake.table("cots", version=version).to_pylist():
        if cot["question_id"] in wanted and cot["cot_id"] in passed:
            cots.setdefault(cot["question_id"], []).append(cot)
    out = []
    for question_id in question_ids:
        q = questions[question_id]
        images = [exported_image(asset_by_id[a], visuals, lake.root) for a in q["asset_ids"]]
        out.append(Item(q, images, _preferred(cots.get(question_id, []))))
    return out


def exported_image(asset: dict, visuals: Visuals, root: Path) -> ExportImage:
    """An image's own file bytes; a video's frames as the one contact sheet the policy sees (PNG)."""
    if asset.get("kind") != "video":
        data = (root / asset["media_uri"]).read_bytes()
        return ExportImage(f"{asset['sha256']}{Path(asset['media_uri']).suffix}", data)
    buffer = io.BytesIO()
    visuals.policy_image(asset, lambda uri: root / uri).save(buffer, format="PNG")
    data = buffer.getvalue()
    return ExportImage(f"{hashlib.sha256(data).hexdigest()}.png", data)


def _preferred(cots: list[dict]) -> dict | None:
    ranked = sorted(cots, key=lambda c: (COT_PREFERENCE.index(c["kind"]) if c["kind"] in COT_PREFERENCE else len(COT_PREFERENCE), c["cot_id"]))
    return ranked[0] if ranked else None


# ---- formats ---------------------------------------------------------------------------------------

def write_trl(items: list[Item], output: Path, *, name: str) -> Written:
    """`train.parquet` for TRL's GRPOTrainer: conversational `prompt`, `images`, and the reward columns."""
    rows = [{"prompt": prompt_with_images(item.question, len(item.images)), "images": _embedded(item.images),
             "solution": item.question["answer"], "answer_type": item.question["answer_type"],
             "choices": list(item.question["choices"] or []), "question_id": item.question["question_id"]} for item in items]
    path = output / "train.parquet"
    _write_parquet(rows, path, images="images")
    return Written([path], len(rows), "embedded in train.parquet",
                   load_with=f'datasets.load_dataset("parquet", data_files="{path}", split="train")')


def write_easyr1(items: list[Item], output: Path, *, name: str) -> Written:
    """`train.parquet` with exactly `problem`, `answer`, `images`, and a format prompt in our answer format."""
    rows = [{"problem": "<image>" * len(item.images) + question_text(item.question["question"], item.question["answer_type"],
                                                                  item.question["choices"] or ()),
             "answer": item.question["answer"], "images": _embedded(item.images)} for item in items]
    path, prompt = output / "train.parquet", output / "format_prompt.jinja"
    _write_parquet(rows, path, images="images")
    prompt.write_text("{{ content | trim }}\n\n" + SYSTEM_PROMPT + "\n")  # EasyR1 renders each problem through it
    return Written([path, prompt], len(rows), "embedded in train.parquet",
                   load_with=f"data.train_files={path} data.prompt_key=problem data.answer_key=answer data.image_key=images "
                             f"data.format_prompt={prompt}")


def write_llamafactory(items: list[Item], output: Path, *, name: str) -> Written:
    """`<name>.json` in sharegpt form, its images under `images/`, and the `dataset_info.json` entry naming it."""
    images_dir = output / "images"
    images_dir.mkdir(exist_ok=True)
    records, skipped = [], 0
    for item in items:
        if item.cot is None:
            skipped += 1
            continue
        for image in item.images:
            target = images_dir / image.name
            if not target.exists():
                target.write_bytes(image.data)
        q = item.question
        records.append({"conversations": [
                            {"from": "human", "value": "<image>" * len(item.images) + question_text(q["question"], q["answer_type"], q["choices"] or ())},
                            {"from": "gpt", "value": sft_target(item.cot, q["answer"])}],
                        "images": [f"images/{image.name}" for image in item.images], "system": SYSTEM_PROMPT})
    data = output / f"{name}.json"
    data.write_text(json.dumps(records, ensure_ascii=False, indent=1))
    info_path = output / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}  # keep the other datasets of a dataset_dir
    info[name] = {"file_name": data.name, "formatting": "sharegpt",
                  "columns": {"messages": "conversations", "images": "images", "system": "system"},
                  "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}
    info_path.write_text(json.dumps(info, indent=2))
    return Written([data, info_path], len(records), f"written to {images_dir}", {"no_verified_cot": skipped} if skipped else {},
                   load_with=f"dataset_dir: {output}  dataset: {name}")


FORMATS: dict[str, Callable[..., Written]] = {"trl": write_trl, "easyr1": write_easyr1, "llamafactory": write_llamafactory}


def prompt_with_images(question: dict, n_images: int) -> list[dict]:
    """The policy's chat (pipelines/policy/prompt.py) with one image placeholder per image."""
    system, user = trl_prompt(question["question"], question["answer_type"], question["choices"] or ())
    texts = [part for part in user["content"] if part["type"] != "image"]
    return [system, {**user, "content": [{"type": "image"}] * n_images + texts}]


def sft_target(cot: dict, answer: str) -> str:
    """What the assistant says: the CoT as is when it is already `<think>…</think><answer>…</answer>`, else wrapped."""
    text = cot["text"].strip()
    if has_think_answer_format(text):
        return text
    return f"<think>{text}</think><answer>{cot['final_answer'] or answer}</answer>"


def _embedded(images: list[ExportImage]) -> list[dict]:
    return [{"bytes": image.data, "path": image.name} for image in images]


def _write_parquet(rows: list[dict], path: Path, *, images: str) -> None:
    """Rows as Parquet with the `datasets` features in the schema metadata, so `load_dataset` decodes the
    `images` column (image bytes) into PIL images, as `Dataset.to_parquet` would write it."""
    import datasets

    table = pa.Table.from_pylist(rows)
    features = datasets.Features.from_arrow_schema(table.schema)
    features[images] = datasets.List(datasets.Image())
    pq.write_table(table.cast(features.arrow_schema), path)
