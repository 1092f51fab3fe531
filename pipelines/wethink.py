"""WeThink's question synthesis as named phases (ALGORITHMS §1); the `synthesize_qa` stage runs them in order.

mine_details → write_candidates → rule_problem → check_validity → answer_independently → agreement
(→ tie_break). Each phase takes the items still standing and returns verdicts; the stage turns the
failures into rejects. Phases call models only through the engines they are given.

- Detail mining: the text reasoner, which never sees the image, names visual evidence the
  description lacks; the VLM answers those questions from the image; the answers are appended to the
  description. Bounded rounds; cuts premise errors against one-shot caption → QA.
- Writing: domain-aware questions under an ability-combination constraint, typed mc/fib/num/des.
- The two-check invalid-question filter: verifiable? ambiguous?
- Agreement: reasoner (from the description) and VLM (from the image) answer independently; both
  must reach the reference. When exactly one does, an optional third model breaks the tie.

Videos go through the same phases: the VLM sees the video's frames in time order (`Source.shown`,
pipelines/visuals.py), and every prompt says "video" where it says "image". The ability
`temporal_reasoning` (schemas.questions.VIDEO_ABILITIES) is offered to the writer and accepted by the
rule check for videos only: a question about a still image cannot need it. (So prompts about images
are word for word what they were before videos existed, and so are their call-cache keys.)
"""

from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError, field_validator

from pipelines.answers import extract_answer, parse_json_object
from pipelines.engines.base import Request, user
from pipelines.policy.prompt import question_text
from pipelines.structured import Answer, ask
from pipelines.verification import check_answer
from pipelines.visuals import Visuals, medium, with_article
from schemas.questions import ABILITIES, VIDEO_ABILITIES

PROMPT_VERSION = "synthesize_qa-v2"
ANSWER_TYPE_HELP = {"mc": "multiple choice with 4 options; the answer is the option's letter",
                    "fib": "fill in the blank written as ___; the answer is one word or number",
                    "num": "the answer is a number", "des": "the answer is one descriptive sentence"}
ANSWER_INSTRUCTION = "Think briefly inside <think></think>, then give only the final answer inside <answer></answer>."


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


class CandidatesReply(BaseModel):
    questions: list[Candidate]


class CheckReply(BaseModel):
    verifiable: bool
    ambiguous: bool
    reason: str = ""


class MissingReply(BaseModel):
    missing: list[str]


# JSON schemas sent with the requests: engines that can guide decoding (vLLM structured outputs,
# OpenAI response_format) make the reply parse; the parsers still check it, whatever the engine.
CANDIDATES_SCHEMA = CandidatesReply.model_json_schema()
CHECK_SCHEMA = CheckReply.model_json_schema()
MISSING_SCHEMA = MissingReply.model_json_schema()


@dataclass
class Source:
    """One image or video being worked on: its asset row and the description the reasoner works from."""

    asset: dict
    description: str
    details: list[tuple[str, str]] = field(default_factory=list)  # (question asked, VLM's answer) from detail mining
    visuals: Visuals | None = None  # where a video's frames are found (None: the asset is an image)

    @property
    def asset_id(self) -> str:
        return self.asset["asset_id"]

    @property
    def medium(self) -> str:
        return medium(self.asset)

    def shown(self, media_path) -> list[dict]:
        """Content parts showing the asset to a VLM: the image, or the video's frames in time order."""
        return (self.visuals or Visuals([self.asset])).parts(self.asset, media_path)


def abilities_for(medium_name: str, abilities) -> list[str]:
    """The abilities a question about an image or a video may claim: video-only ones are dropped for images."""
    return [a for a in abilities if medium_name == "video" or a not in VIDEO_ABILITIES]


# ---- parsing -------------------------------------------------------------------------------------

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


def parse_missing(text: str) -> list[str]:
    data = parse_json_object(text)
    missing = data.get("missing")
    if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
        raise ValueError('expected {"missing": ["question for someone who can see the image", ...]} (an empty list if nothing is missing)')
    return [m.strip() for m in missing if m.strip()]


def parse_answer(text: str) -> str:
    answer = extract_answer(text)
    if answer is None:
        raise ValueError("no final answer found; put it inside <answer></answer>")
    return answer


def parse_plain(text: str) -> str:
    if not text.strip():
        raise ValueError("the reply was empty")
    return text.strip()


# ---- phases --------------------------------------------------------------------------------------

def mine_details(sources: list[Source], reasoner, vlm, media_path, *, rounds: int, max_queries: int,
                 max_retries: int) -> None:
    """Grow each description with the VLM's answers to what the reasoner says is missing (in place).

    A source whose reasoner reply cannot be used simply stops mining: its description stands.
    """
    active = list(sources)
    for _ in range(rounds):
        if not active:
            return
        requests = [Request(messages=[user(_detail_prompt(s.description, max_queries, s.medium))], max_tokens=512,
                            prompt_version=PROMPT_VERSION, task="synthesize_qa.detail_request", response_schema=MISSING_SCHEMA,
                            hints={"scene": s.asset["scene"], "max_queries": max_queries}) for s in active]
        wanted = [(s, answer.value[:max_queries]) for s, answer in zip(active, ask(reasoner, requests, parse_missing, max_retries=max_retries))
                  if answer.ok and answer.value]
        queries = [(s, q) for s, qs in wanted for q in qs]
        replies = ask(vlm, [Request(messages=[user(*s.shown(media_path), f"{q}\nAnswer briefly and precisely.")], max_tokens=256,
                                    prompt_version=PROMPT_VERSION, task="synthesize_qa.detail_answer",
                                    hints={"scene": s.asset["scene"], "question": q}) for s, q in queries],
                      parse_plain, max_retries=max_retries)
        for (source, query), reply in zip(queries, replies):
            if reply.ok:
                source.details.append((query, reply.value))
        for source, _ in wanted:
            new = [f"- {q} {a}" for q, a in source.details if f"- {q} " not in source.description]
            if new:
                source.description += f"\nMore details, from a second look at the {source.medium}:\n" + "\n".join(new)
        active = [s for s, _ in wanted]


def write_candidates(sources: list[Source], reasoner, *, n: int, answer_types, abilities, min_abilities,
                     max_retries: int) -> list[Answer]:
    requests = [Request(messages=[user(_write_prompt(s.description, n, answer_types, abilities_for(s.medium, abilities), min_abilities,
                                                     s.medium))], max_tokens=2048,
                        prompt_version=PROMPT_VERSION, task="synthesize_qa.write", response_schema=CANDIDATES_SCHEMA,
                        hints={"scene": s.asset["scene"], "n_questions": n}) for s in sources]
    return ask(reasoner, requests, parse_candidates, max_retries=max_retries)


def rule_problem(candidate: Candidate, answer_types, abilities, min_abilities) -> tuple[str, str] | None:
    """(slug, detail) when a candidate breaks a rule that needs no model; None when it passes.
    `abilities`: those allowed for its asset (`abilities_for`)."""
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


def check_validity(items: list[tuple[Source, Candidate]], judge, *, max_retries: int) -> list[tuple[str, str, str] | None]:
    """The two-check filter per item: None when valid, else (slug, detail, raw)."""
    checks = ask(judge, [Request(messages=[user(_check_prompt(s.description, c, s.medium))], max_tokens=256, prompt_version=PROMPT_VERSION,
                                 task="synthesize_qa.check", response_schema=CHECK_SCHEMA, hints={"scene": s.asset["scene"], "question": c.question})
                         for s, c in items], parse_check, max_retries=max_retries)
    verdicts = []
    for check in checks:
        if not check.ok:
            verdicts.append(("check_failed", f"the validity check gave no usable verdict: {check.error}", check.raw))
        elif not check.value["verifiable"]:
            verdicts.append(("unverifiable", check.value.get("reason", ""), check.raw))
        elif check.value["ambiguous"]:
            verdicts.append(("ambiguous", check.value.get("reason", ""), check.raw))
        else:
            verdicts.append(None)
    return verdicts


def answer_independently(items: list[tuple[Source, Candidate]], engine, media_path, *, with_image: bool,
                         max_retries: int) -> list[Answer]:
    """Each question answered once by `engine`: from the image, or from the description only."""
    def request(source: Source, candidate: Candidate) -> Request:
        asked = question_text(candidate.question, candidate.answer_type, candidate.choices)
        if with_image:
            messages = [user(*source.shown(media_path), f"{asked}\n{ANSWER_INSTRUCTION}")]
        else:
            messages = [user(f"Description of {with_article(source.medium)}:\n{source.description}\n\nQuestion about the {source.medium}:\n"
                             f"{asked}\n{ANSWER_INSTRUCTION}")]
        return Request(messages=messages, max_tokens=1024, prompt_version=PROMPT_VERSION, task="synthesize_qa.answer",
                       hints={"scene": source.asset["scene"], "question": candidate.question})

    return ask(engine, [request(s, c) for s, c in items], parse_answer, max_retries=max_retries)


def agreement(candidate: Candidate, by_text: Answer, by_image: Answer, judge, scene) -> tuple[str, str] | None:
    """None when both independent answers reach the reference; else (slug, detail).

    Slug `answers_disagree` means exactly one reached it: the case a tie-break can settle.
    """
    if not by_text.ok or not by_image.ok:
        return "no_independent_answer", f"from caption: {by_text.error or 'ok'}; from image: {by_image.error or 'ok'}"
    right_text = matches(by_text.value, candidate, judge, scene)
    right_image = matches(by_image.value, candidate, judge, scene)
    for verdict in (right_text, right_image):
        if isinstance(verdict, str):
            return "judge_failed", verdict
    if right_text and right_image:
        return None
    if not right_text and not right_image:
        return "reference_disputed", f"both answerers disagree with the reference {candidate.answer!r}: {by_text.value!r}, {by_image.value!r}"
    return "answers_disagree", (f"reference {candidate.answer!r}; from caption {by_text.value!r} ({'agrees' if right_text else 'differs'}), "
                                f"from image {by_image.value!r} ({'agrees' if right_image else 'differs'})")


def matches(predicted: str, candidate: Candidate, judge, scene) -> bool | str:
    """Whether an answer reaches the reference; a string says why the judge could not tell."""
    check = check_answer(predicted, candidate.answer, candidate.answer_type, choices=tuple(candidate.choices))
    if check is not None:
        return check.passed
    from pipelines.stages.verify import judge_score  # descriptive answers: a model judges

    judged = judge_score(judge, candidate.question, candidate.answer, predicted, scene=scene)
    return judged.error if judged.score is None else judged.score >= 0.5


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").strip())
        return True
    except ValueError:
        return False


# ---- prompts -------------------------------------------------------------------------------------

def _detail_prompt(description: str, max_queries: int, medium_name: str = "image") -> str:
    return (f"You will write reasoning questions about {with_article(medium_name)} you cannot see, from this description:\n{description}\n\n"
            f"Before writing, list up to {max_queries} facts you would need that the description does not state clearly "
            f"(a count, a colour, a position, a number or label written in the {medium_name}), each as a short question for "
            f"someone who can see the {medium_name}. If nothing is missing, give an empty list.\n"
            'Reply with JSON only: {"missing": ["...", "..."]}')


def _write_prompt(description: str, n: int, answer_types, abilities, min_abilities, medium_name: str = "image") -> str:
    ability_lines = "\n".join(f"- {name}: {ABILITIES.get(name, '')}" for name in abilities)
    type_lines = "\n".join(f"- {t}: {ANSWER_TYPE_HELP.get(t, t)}" for t in answer_types)
    return (f"You write reasoning questions about {with_article(medium_name)} you cannot see, working from its description.\n\n"
            f"Description:\n{description}\n\n"
            f"Write {n} questions. Each must be answerable from the {medium_name} alone with exactly one correct answer, "
            f"and must need at least {min_abilities} of these abilities together:\n{ability_lines}\n\n"
            f"Answer types:\n{type_lines}\n\n"
            'Reply with a JSON object only: {"questions": [{"question": "...", "answer": "...", "answer_type": "...", '
            '"choices": ["..."], "abilities": ["..."], "category": "..."}]}')


def _check_prompt(description: str, candidate: Candidate, medium_name: str = "image") -> str:
    return (f"{with_article(medium_name).capitalize()} is described as:\n{description}\n\nA question written about it:\n"
            f"{question_text(candidate.question, candidate.answer_type, candidate.choices)}\nProposed answer: {candidate.answer}\n\n"
            f"Check two things. (1) verifiable: can it be answered from the {medium_name}, with an answer that can be checked? "
            "(2) ambiguous: could two careful readers give different correct answers?\n"
            'Reply with JSON only: {"verifiable": true or false, "ambiguous": true or false, "reason": "..."}')
