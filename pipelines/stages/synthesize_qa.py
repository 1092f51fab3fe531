"""synthesize_qa: WeThink's question synthesis: write from the caption, filter, keep what two agree on.

Per image (ALGORITHMS §1): (1) the `reasoner`, which never sees the image, writes candidate questions
from the fine caption under an ability-combination constraint, typed mc / fib / num / des, as JSON;
(2) rule checks drop candidates of an unrequested type, with unknown or too few abilities, or with a
malformed answer; (3) the two-check invalid-question filter: the `judge` rules each question
verifiable or not and ambiguous or not; (4) answer agreement: the reasoner (from the caption) and the
`captioner` VLM (from the image) answer independently, and a question is kept only when both reach
its reference answer. Every dropped candidate is a reject naming the candidate and its image; an
image none of whose candidates survive is rejected with them. Detail mining and the third-model
tie-break are deeper steps not taken here.
"""

import pyarrow as pa
from pydantic import BaseModel, ValidationError, field_validator

from pipelines.answers import extract_answer, parse_json_object
from pipelines.engines.base import Request, image_part, user
from pipelines.policy.prompt import question_text
from pipelines.stage import StageContext, StageResult, stage
from pipelines.structured import Answer, ask
from pipelines.verification import check_answer
from schemas import make_id
from schemas.questions import ABILITIES

PROMPT_VERSION = "synthesize_qa-v1"
ANSWER_TYPE_HELP = {"mc": "multiple choice with 4 options; the answer is the option's letter",
                    "fib": "fill in the blank written as ___; the answer is one word or number",
                    "num": "the answer is a number", "des": "the answer is one descriptive sentence"}


class Candidate(BaseModel):
    question: str
    answer: str
    answer_type: str
    choices: list[str] = []
    abilities: list[str]
    category: str = "general"

    @field_validator("question", "answer")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not str(value).strip():
            raise ValueError("must not be empty")
        return str(value).strip()


def parse_candidates(text: str) -> list[Candidate]:
    data = parse_json_object(text)
    if not isinstance(data.get("questions"), list) or not data["questions"]:
        raise ValueError('expected {"questions": [ ... ]} with at least one question')
    candidates = []
    for index, question in enumerate(data["questions"]):
        try:
            candidates.append(Candidate.model_validate(question))
        except ValidationError as error:
            first = error.errors()[0]
            where = f"field {first['loc'][-1]!r}" if first["loc"] else "not an object"
            raise ValueError(f"question {index}: {where}: {first['msg']}") from None
    return candidates


def parse_check(text: str) -> dict:
    data = parse_json_object(text)
    for key in ("verifiable", "ambiguous"):
        if not isinstance(data.get(key), bool):
            raise ValueError(f'expected "{key}": true or false')
    return data


@stage(reads={"assets": ["asset_id", "media_uri", "sha256", "scene"], "captions": ["asset_id", "style", "text"]},
       writes="questions", version=1, unit="asset", engines=("reasoner", "captioner", "judge"))
def synthesize_qa(assets: pa.Table, captions: pa.Table, ctx: StageContext, *, questions_per_image: int = 3,
                  answer_types: list[str] = ["mc", "fib", "num", "des"], min_abilities: int = 2,
                  abilities: list[str] = list(ABILITIES), max_retries: int = 1) -> StageResult:
    """`min_abilities`: abilities a question must combine; `answer_types`: which types to keep."""
    reasoner, vlm, judge = ctx.engine("reasoner"), ctx.engine("captioner"), ctx.engine("judge")
    fine = {c["asset_id"]: c["text"] for c in captions.to_pylist() if c["style"] == "fine"}
    assets_rows = assets.to_pylist()
    rows, rejects = [], []

    # (1) write candidates from the caption
    with_caption = [a for a in assets_rows if a["asset_id"] in fine]
    for asset in assets_rows:
        if asset["asset_id"] not in fine:
            rejects.append(ctx.reject(asset["asset_id"], "synthesize_qa.no_caption", "no fine caption to write questions from"))
    write = [Request(messages=[user(_write_prompt(fine[a["asset_id"]], questions_per_image, answer_types, abilities, min_abilities))],
                     max_tokens=2048, prompt_version=PROMPT_VERSION, task="synthesize_qa.write",
                     hints={"scene": a["scene"], "n_questions": questions_per_image}) for a in with_caption]
    candidates = []  # (asset, candidate, question_id, write answer)
    for asset, answer in zip(with_caption, ask(reasoner, write, parse_candidates, max_retries=max_retries)):
        if not answer.ok:
            reason = "synthesize_qa.engine_error" if answer.engine_failed else "synthesize_qa.malformed_output"
            rejects.append(ctx.reject(asset["asset_id"], reason, answer.error, raw=answer.raw))
            continue
        seen = set()
        for candidate in answer.value:
            question_id = make_id("question", [asset["asset_id"]], candidate.question)
            problem = _rule_problem(candidate, answer_types, abilities, min_abilities)
            if question_id in seen:
                problem = ("duplicate_question", "the same question twice in one batch")
            seen.add(question_id)
            if problem:
                rejects.append(ctx.reject(question_id, f"synthesize_qa.{problem[0]}", problem[1], input_id=asset["asset_id"],
                                          raw=candidate.model_dump_json()))
            else:
                candidates.append((asset, candidate, question_id, answer))

    # (3) the two-check invalid-question filter
    checks = ask(judge, [Request(messages=[user(_check_prompt(fine[a["asset_id"]], c))], max_tokens=256,
                                 prompt_version=PROMPT_VERSION, task="synthesize_qa.check",
                                 hints={"scene": a["scene"], "question": c.question}) for a, c, _, _ in candidates],
                 parse_check, max_retries=max_retries)
    survivors = []
    for (asset, candidate, question_id, written), check in zip(candidates, checks):
        problem = None
        if not check.ok:
            problem = ("check_failed", f"the validity check gave no usable verdict: {check.error}")
        elif not check.value["verifiable"]:
            problem = ("unverifiable", check.value.get("reason", ""))
        elif check.value["ambiguous"]:
            problem = ("ambiguous", check.value.get("reason", ""))
        if problem:
            rejects.append(ctx.reject(question_id, f"synthesize_qa.{problem[0]}", problem[1], input_id=asset["asset_id"], raw=check.raw))
        else:
            survivors.append((asset, candidate, question_id, written))

    # (4) independent answers: the reasoner from the caption, the VLM from the image
    def answer_request(asset, candidate, with_image: bool) -> Request:
        ask_text = question_text(candidate.question, candidate.answer_type, candidate.choices)
        if with_image:
            messages = [user(image_part(ctx.media_path(asset["media_uri"]), asset["sha256"]), f"{ask_text}\n{_ANSWER_INSTRUCTION}")]
        else:
            messages = [user(f"Description of an image:\n{fine[asset['asset_id']]}\n\nQuestion about the image:\n{ask_text}\n{_ANSWER_INSTRUCTION}")]
        return Request(messages=messages, max_tokens=1024, prompt_version=PROMPT_VERSION, task="synthesize_qa.answer",
                       hints={"scene": asset["scene"], "question": candidate.question})

    from_text = ask(reasoner, [answer_request(a, c, False) for a, c, _, _ in survivors], _parse_answer, max_retries=max_retries)
    from_image = ask(vlm, [answer_request(a, c, True) for a, c, _, _ in survivors], _parse_answer, max_retries=max_retries)
    for (asset, candidate, question_id, written), by_text, by_image in zip(survivors, from_text, from_image):
        verdict = _agreement(candidate, by_text, by_image, judge, asset)
        if verdict:
            rejects.append(ctx.reject(question_id, f"synthesize_qa.{verdict[0]}", verdict[1], input_id=asset["asset_id"],
                                      raw=f"from caption: {by_text.raw}\nfrom image: {by_image.raw}"))
            continue
        rows.append({"question_id": question_id, "asset_ids": [asset["asset_id"]], "question": candidate.question,
                     "answer": candidate.answer, "answer_type": candidate.answer_type, "choices": candidate.choices,
                     "category": candidate.category, "abilities": candidate.abilities,
                     "reward_route": "model" if candidate.answer_type == "des" else "rule", "generator": reasoner.model,
                     "model": reasoner.model, "model_revision": reasoner.revision, "prompt_version": PROMPT_VERSION,
                     "call_id": written.call_id})
    ctx.progress(len(assets_rows))
    return StageResult(ctx.rows("questions", rows), ctx.rejects(rejects))


_ANSWER_INSTRUCTION = "Think briefly inside <think></think>, then give only the final answer inside <answer></answer>."


def _parse_answer(text: str) -> str:
    answer = extract_answer(text)
    if answer is None:
        raise ValueError("no final answer found; put it inside <answer></answer>")
    return answer


def _rule_problem(candidate: Candidate, answer_types, abilities, min_abilities) -> tuple[str, str] | None:
    if candidate.answer_type not in answer_types:
        return "type_not_requested", f"answer type {candidate.answer_type!r} is not one of {answer_types}"
    unknown = [a for a in candidate.abilities if a not in abilities]
    if unknown:
        return "unknown_ability", f"abilities {unknown} are not in the taxonomy ({', '.join(abilities)})"
    if len(set(candidate.abilities)) < min_abilities:
        return "too_few_abilities", f"combines {len(set(candidate.abilities))} abilities {candidate.abilities}; needs {min_abilities}"
    if candidate.answer_type == "mc":
        letters = [chr(65 + i) for i in range(len(candidate.choices))]
        if len(candidate.choices) < 2 or candidate.answer.strip().upper() not in letters:
            return "bad_choices", f"multiple choice needs >= 2 options and a letter answer among {letters}; got {candidate.answer!r}"
    if candidate.answer_type == "num" and not _is_number(candidate.answer):
        return "answer_not_numeric", f"a num question needs a numeric answer, got {candidate.answer!r}"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").strip())
        return True
    except ValueError:
        return False


def _agreement(candidate: Candidate, by_text: Answer, by_image: Answer, judge, asset) -> tuple[str, str] | None:
    """None when both independent answers reach the reference; else (reason slug, detail)."""
    if not by_text.ok or not by_image.ok:
        return "no_independent_answer", f"from caption: {by_text.error or 'ok'}; from image: {by_image.error or 'ok'}"
    right_text = _matches(by_text.value, candidate, judge, asset)
    right_image = _matches(by_image.value, candidate, judge, asset)
    for verdict in (right_text, right_image):
        if isinstance(verdict, str):
            return "judge_failed", verdict
    if right_text and right_image:
        return None
    if not right_text and not right_image:
        return "reference_disputed", f"both answerers disagree with the reference {candidate.answer!r}: {by_text.value!r}, {by_image.value!r}"
    return "answers_disagree", (f"reference {candidate.answer!r}; from caption {by_text.value!r} ({'agrees' if right_text else 'differs'}), "
                                f"from image {by_image.value!r} ({'agrees' if right_image else 'differs'})")


def _matches(predicted: str, candidate: Candidate, judge, asset) -> bool | str:
    """Whether an answer reaches the reference; a string says why the judge could not tell."""
    check = check_answer(predicted, candidate.answer, candidate.answer_type, choices=tuple(candidate.choices))
    if check is not None:
        return check.passed
    from pipelines.stages.verify import judge_score  # descriptive answers: a model judges

    judged = judge_score(judge, candidate.question, candidate.answer, predicted, scene=asset["scene"])
    return judged.error if judged.score is None else judged.score >= 0.5


def _write_prompt(caption: str, n: int, answer_types, abilities, min_abilities) -> str:
    ability_lines = "\n".join(f"- {name}: {ABILITIES.get(name, '')}" for name in abilities)
    type_lines = "\n".join(f"- {t}: {ANSWER_TYPE_HELP.get(t, t)}" for t in answer_types)
    return (f"You write reasoning questions about an image you cannot see, working from its description.\n\n"
            f"Description:\n{caption}\n\n"
            f"Write {n} questions. Each must be answerable from the image alone with exactly one correct answer, "
            f"and must need at least {min_abilities} of these abilities together:\n{ability_lines}\n\n"
            f"Answer types:\n{type_lines}\n\n"
            'Reply with a JSON object only: {"questions": [{"question": "...", "answer": "...", "answer_type": "...", '
            '"choices": ["..."], "abilities": ["..."], "category": "..."}]}')


def _check_prompt(caption: str, candidate: Candidate) -> str:
    return (f"An image is described as:\n{caption}\n\nA question written about it:\n"
            f"{question_text(candidate.question, candidate.answer_type, candidate.choices)}\nProposed answer: {candidate.answer}\n\n"
            "Check two things. (1) verifiable: can it be answered from the image, with an answer that can be checked? "
            "(2) ambiguous: could two careful readers give different correct answers?\n"
            'Reply with JSON only: {"verifiable": true or false, "ambiguous": true or false, "reason": "..."}')


