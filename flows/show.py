"""`flow show`: one question with everything the dataset knows about it, gathered from the tables."""

import json

from schemas.errors import LakeError


def question_record(lake, question_id: str, *, version: int | None = None) -> dict:
    """Question, image, captions, CoTs, verdicts, difficulty per policy, rollout summary, rejects."""
    at = "" if version is None else f" AT (VERSION => {int(version)})"
    if version is not None:
        lake._check_version(version)
    matches = lake.sql(f"SELECT * FROM questions{at} WHERE starts_with(question_id, '{_quote(question_id)}')").to_pylist()
    if not matches:
        raise LakeError(f"no question with id {question_id!r} in {lake.root.name}"
                        f"{'' if version is None else f' at version {version}'}; list some with "
                        f"`flow sql \"SELECT question_id, question FROM questions LIMIT 10\" --dataset {lake.root.name}`")
    if len(matches) > 1:
        raise LakeError(f"{question_id!r} matches {len(matches)} questions ({', '.join(m['question_id'] for m in matches[:5])}, ...); give more of the id")
    question = matches[0]
    qid = question["question_id"]
    asset_ids = ", ".join(f"'{_quote(a)}'" for a in question["asset_ids"]) or "''"
    assets = lake.sql(f"SELECT asset_id, media_uri, width, height, format, source, source_ref FROM assets{at} WHERE asset_id IN ({asset_ids})").to_pylist()
    for asset in assets:
        asset["path"] = str(lake.root / asset["media_uri"])
    captions = lake.sql(f"SELECT style, text, model FROM captions{at} WHERE asset_id IN ({asset_ids}) ORDER BY style").to_pylist()
    cots = lake.sql(f"SELECT cot_id, kind, text, final_answer, n_tokens, reflections FROM cots{at} WHERE question_id = '{qid}' ORDER BY kind").to_pylist()
    verdicts = lake.sql(f"SELECT subject_id, verifier, passed, score, detail FROM verdicts{at} WHERE question_id = '{qid}'").to_pylist()
    difficulty = lake.sql(f"""SELECT policy_id, method, n_rollouts, pass_rate, pass_rate_text_only, cde_gap, reward_std,
                                     learnability, selected, reason, stage
                              FROM difficulty{at} WHERE question_id = '{qid}' ORDER BY stage, policy_id""").to_pylist()
    rollouts = lake.sql(f"""SELECT policy_id, with_image, count(*) AS n, sum(correct::INT) AS n_correct, avg(reward) AS mean_reward,
                                   any_value(response) AS example_response
                            FROM rollouts{at} WHERE question_id = '{qid}' GROUP BY ALL ORDER BY ALL""").to_pylist()
    rejects = lake.sql(f"SELECT stage, reason, detail FROM rejects{at} WHERE subject_id = '{qid}' OR input_id = '{qid}'").to_pylist()
    return {"question": {k: question[k] for k in ("question_id", "question", "answer", "answer_type", "choices", "category",
                                                  "abilities", "reward_route", "generator")},
            "assets": assets, "captions": captions, "cots": cots, "verdicts": verdicts, "difficulty": difficulty,
            "rollouts": rollouts, "rejects": rejects}


def render_record(record: dict) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = Console()
    q = record["question"]
    body = f"[bold]{q['question']}[/bold]\n"
    if q["choices"]:
        body += "\n".join(f"  {chr(65 + i)}. {c}" for i, c in enumerate(q["choices"])) + "\n"
    body += (f"\nanswer: [green]{q['answer']}[/green]   type: {q['answer_type']}   route: {q['reward_route']}\n"
             f"category: {q['category']}   abilities: {', '.join(q['abilities'])}   generator: {q['generator']}")
    console.print(Panel(body, title=q["question_id"]))
    for asset in record["assets"]:
        console.print(f"image: {asset['path']}  ({asset['width']}x{asset['height']} {asset['format']}, from {asset['source']}:{asset['source_ref']})")
    for caption in record["captions"]:
        console.print(Panel(caption["text"], title=f"caption · {caption['style']}", title_align="left"))
    for cot in record["cots"]:
        console.print(Panel(cot["text"], title=f"CoT · {cot['kind']} · answer {cot['final_answer']} · {cot['n_tokens']} tokens · "
                                                f"{cot['reflections']} reflections", title_align="left"))
    for name in ("verdicts", "difficulty", "rollouts", "rejects"):
        rows = record[name]
        if not rows:
            continue
        table = Table(title=name, title_justify="left")
        for column in rows[0]:
            table.add_column(column, overflow="fold", max_width=60)
        for row in rows:
            table.add_row(*["" if v is None else f"{v:.3f}" if isinstance(v, float) else json.dumps(v) if isinstance(v, list) else str(v)
                            for v in row.values()])
        console.print(table)


def _quote(text: str) -> str:
    return text.replace("'", "''")
