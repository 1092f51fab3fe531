"""The scripted teacher: the synthetic world's oracle, speaking the formats a real model must.

It answers caption, question-writing, question-checking, answering, CoT and judge requests for
synthetic images and clips from their scene graphs (passed as `request.hints["scene"]`: a still
scene's, or a clip's over time, answered from `knowledge` or `clip_knowledge`), and writes its output
exactly as the stages ask a real model to (plain text, fenced JSON, `<think>…</think><answer>…</answer>`),
so the stages' parsing, validation, retry and filtering code runs as it would against vLLM.

It is also wrong the way models are: a seeded noise model makes a share of outputs malformed
(bad JSON, a missing field), a share of answers wrong, and proposes invalid questions, so rejects,
retries and the agreement filter are exercised. The noise is a deterministic function of the call,
so runs are reproducible; a retry (whose prompt carries the parse error) draws afresh.
"""

import json
import random
import re
from collections import Counter
import time

from pipelines.answers import extract_answer
from pipelines.engines.base import Request, Response, text_of
from pipelines.verification import check_answer
from pipelines.world import knowledge_of, world_from_json
from pipelines.world.scenes import COLOURS, KINDS
from schemas.base import sha256_text

DEFAULT_NOISE = {"malformed": 0.05, "wrong_answer": 0.08, "invalid_question": 0.3}


class ScriptedEngine:
    name = "scripted"

    def __init__(self, model: str = "scripted-teacher", *, noise: dict | None = None, revision: str = "world-v1"):
        self.model, self.revision = model, revision
        self.noise = {**DEFAULT_NOISE, **(noise or {})}
        unknown = set(self.noise) - set(DEFAULT_NOISE)
        if unknown:
            raise ValueError(f"unknown noise kinds {sorted(unknown)}; known: {sorted(DEFAULT_NOISE)}")

    def generate(self, requests: list[Request]) -> list[Response]:
        return [self._one(r) for r in requests]

    def _one(self, request: Request) -> Response:
        started = time.perf_counter()
        call_id = request.call_id(self.name, self.model, self.revision)
        handler = _HANDLERS.get(request.task)
        if handler is None:
            return Response([], call_id, error=f"the scripted teacher has no answer for task {request.task!r} "
                                               f"(it knows: {', '.join(sorted(_HANDLERS))})")
        if request.task not in _SCENE_FREE and not request.hints.get("scene"):
            return Response([], call_id, error="the scripted teacher only knows synthetic images (no scene graph "
                                               "in the request's hints); use a real model profile for other data")
        scene = world_from_json(request.hints["scene"]) if request.hints.get("scene") else None
        texts = []
        for sample in range(request.n):
            rng = random.Random(int(sha256_text(f"{call_id}/{sample}")[:16], 16))
            texts.append(handler(self, scene, request, rng))
        prompt_words = len(text_of(request.messages).split())
        return Response(texts, call_id, usage={"prompt_tokens": prompt_words, "completion_tokens": sum(len(t.split()) for t in texts)},
                        latency_s=time.perf_counter() - started)

    def _noisy(self, kind: str, rng: random.Random) -> bool:
        return rng.random() < self.noise[kind]


# ---- handlers: one per task the stages ask for -------------------------------------------------

def _caption_coarse(engine, scene, request, rng):
    return knowledge_of(scene).caption_coarse(scene)


def _caption_fine(engine, scene, request, rng):
    return knowledge_of(scene).caption_fine(scene)


def _write_questions(engine, scene, request, rng):
    """Candidate questions as fenced JSON; some invalid ones mixed in, sometimes malformed."""
    items = list(knowledge_of(scene).qa_items(scene))
    wanted = request.hints.get("n_questions", 3)
    rng.shuffle(items)
    chosen = items[:wanted]
    if engine._noisy("invalid_question", rng):
        chosen += knowledge_of(scene).invalid_items(scene)[:1]
    payload = {"questions": [_item_json(item) for item in chosen]}
    if engine._noisy("malformed", rng):
        return _malformed(payload, rng)
    return "Here are the questions.\n```json\n" + json.dumps(payload, indent=1) + "\n```"


def _check_question(engine, scene, request, rng):
    item = knowledge_of(scene).find_item(scene, request.hints.get("question", ""))
    if item is None:
        verdict = {"verifiable": False, "ambiguous": True, "reason": "the question does not match anything in the image"}
    else:
        verdict = {"verifiable": item.invalid_reason != "unverifiable", "ambiguous": item.invalid_reason == "ambiguous",
                   "reason": item.invalid_reason or "answerable from the image with one correct answer"}
    if engine._noisy("malformed", rng):
        return _malformed(verdict, rng)
    return json.dumps(verdict)


def _answer(engine, scene, request, rng):
    """An independent answer (from the description or from the image): brief reasoning + answer tag."""
    item = knowledge_of(scene).find_item(scene, request.hints.get("question", ""))
    if item is None:
        return "<think>The question does not fit the image.</think><answer>unknown</answer>"
    answer = knowledge_of(scene).wrong_answer(item, rng) if engine._noisy("wrong_answer", rng) else item.answer
    return f"<think>{' '.join(item.steps)}</think><answer>{answer}</answer>"


def _raw_cot(engine, scene, request, rng):
    """A long, self-correcting chain (the kind CoT refinement exists to shorten)."""
    item = knowledge_of(scene).find_item(scene, request.hints.get("question", ""))
    if item is None:
        return "<think>I cannot work this out from the image.</think><answer>unknown</answer>"
    wrong = engine._noisy("wrong_answer", rng)
    steps = list(item.steps)
    lines = ["Let me look at the image carefully."]
    for i, step in enumerate(steps):
        lines.append(step)
        if i == 0 or rng.random() < 0.3:
            lines.append(f"Wait, let me double-check that. {step}")
    lines.append("Hmm, let me re-check the whole reasoning once more before answering.")
    answer = knowledge_of(scene).wrong_answer(item, rng) if wrong else item.answer
    return "<think>" + " ".join(lines) + f"</think><answer>{answer}</answer>"


def _refine_cot(engine, scene, request, rng):
    """A short rationale consistent with the given final answer."""
    item = knowledge_of(scene).find_item(scene, request.hints.get("question", ""))
    final = request.hints.get("final_answer") or (item.answer if item else "unknown")
    steps = " ".join(item.steps) if item else "The image does not settle it."
    if engine._noisy("malformed", rng):
        return steps  # forgot the tags: the stage must notice and retry
    return f"<think>{steps}</think><answer>{final}</answer>"


def _judge(engine, scene, request, rng):
    """Tiered score for a descriptive answer, facts first: a fact the reference does not state (a
    changed number, label, colour, shape or relation) scores 0; all facts and close wording score 1;
    a correct but incomplete answer scores 0.5 when its wording overlaps enough."""
    score, reason = _descriptive_score(request.hints.get("candidate", ""), request.hints.get("reference", ""))
    return json.dumps({"score": score, "verdict": "correct" if score >= 0.5 else "incorrect", "reason": reason})


def _judge_solution(engine, scene, request, rng):
    """ThinkLite-VL's judge: told the question, the ground truth and a step-by-step solution, it
    answers in one sentence whether the solution's final answer is true. It reads the final answer
    the way a model would (the last boxed value or answer line) and compares it with the verifier of
    the answer type (descriptive answers: by their facts and wording). Noise: `wrong_answer` flips
    the verdict; `malformed` opens with a sentence of its own, so "true" is not in the first sentence."""
    hints = request.hints
    answer, reference = extract_answer(hints.get("solution", "")), str(hints.get("reference", ""))
    answer_type = hints.get("answer_type", "fib")
    if answer is None:
        correct = False
    elif answer_type == "des":
        correct = _descriptive_score(answer, reference)[0] >= 0.5
    else:
        correct = check_answer(answer, reference, answer_type, choices=tuple(hints.get("choices") or ())).passed
    if engine._noisy("wrong_answer", rng):
        correct = not correct
    verdict = f"The generated answer is {'true' if correct else 'false'}."
    if engine._noisy("malformed", rng):
        return f"Let me compare the rationale with the ground truth answer first. {verdict}"
    return verdict


def _descriptive_score(candidate: str, reference: str) -> tuple[float, str]:
    wrong, missing = _facts(candidate) - _facts(reference), _facts(reference) - _facts(candidate)
    overlap = _token_f1(candidate, reference)
    if wrong:
        score, reason = 0.0, f"states {sorted(wrong)}, which the reference does not"
    elif not missing and overlap >= 0.6:
        score, reason = 1.0, f"all facts, token overlap {overlap:.2f}"
    else:
        score = 0.5 if overlap >= 0.35 else 0.0
        reason = f"misses {sorted(missing)}; token overlap {overlap:.2f}"
    return score, reason


_FACT_WORDS = set(COLOURS) | set(KINDS) | {"left", "right", "above", "below", "more", "fewer", "larger", "smaller"}


def _facts(text: str) -> Counter:
    """Numbers, quoted labels, colours, shapes and relations, counted: what a descriptive answer must
    get right ("5 and 5" against "4 and 5" states a 5 too many)."""
    words = [w for w in re.findall(r"[a-z]+", text.lower()) if w in _FACT_WORDS]
    return Counter(re.findall(r"-?\d+(?:\.\d+)?", text) + [q.lower() for q in re.findall(r"'([^']+)'", text)] + words)


def _detail_request(engine, scene, request, rng):
    """What a reader of the description would still want to check: a few of the scene's questions.
    A description that already carries a second look is taken as complete (mining stops)."""
    if "More details" in text_of(request.messages):
        return json.dumps({"missing": []})
    items = [i for i in knowledge_of(scene).qa_items(scene) if i.answer_type in ("num", "fib")]
    rng.shuffle(items)
    payload = {"missing": [i.question for i in items[: request.hints.get("max_queries", 2)]]}
    return _malformed(payload, rng) if engine._noisy("malformed", rng) else json.dumps(payload)


def _detail_answer(engine, scene, request, rng):
    item = knowledge_of(scene).find_item(scene, request.hints.get("question", ""))
    return f"{item.answer}." if item else "I cannot tell that from the image."


def _write_unlabelled(engine, scene, request, rng):
    """MM-UPT: questions written from the image itself, without answers."""
    items = [i for i in knowledge_of(scene).qa_items(scene)]
    rng.shuffle(items)
    payload = {"questions": [{k: v for k, v in _item_json(i).items() if k != "answer"} for i in items[: request.hints.get("n_questions", 3)]]}
    return _malformed(payload, rng) if engine._noisy("malformed", rng) else json.dumps(payload)


def _pseudo_cot(engine, scene, request, rng):
    """Vision-R1's pseudo-CoT: a caption, then reasoning that names the details the question needs."""
    item = knowledge_of(scene).find_item(scene, request.hints.get("question", ""))
    steps = " ".join(item.steps) if item else "The image does not settle the question."
    return f"{knowledge_of(scene).caption_coarse(scene)} Reasoning: {steps}"


def _bridge_description(engine, scene, request, rng):
    return knowledge_of(scene).caption_fine(scene)


_HANDLERS = {
    "caption.coarse": _caption_coarse,
    "caption.fine": _caption_fine,
    "synthesize_qa.write": _write_questions,
    "synthesize_qa.check": _check_question,
    "synthesize_qa.answer": _answer,
    "synthesize_qa.detail_request": _detail_request,
    "synthesize_qa.detail_answer": _detail_answer,
    "synthesize_qa.mmupt_write": _write_unlabelled,
    "distill_cot.raw": _raw_cot,
    "bridge_cot.pseudo": _pseudo_cot,
    "bridge_cot.describe": _bridge_description,
    "bridge_cot.reason": _raw_cot,
    "distill_cot.refine": _refine_cot,
    "judge": _judge,
    "mcts.judge": _judge_solution,
}
_SCENE_FREE = {"judge", "mcts.judge"}  # judges read the texts they are given, not the image


def _item_json(item) -> dict:
    return {"question": item.question, "answer": item.answer, "answer_type": item.answer_type,
            "choices": list(item.choices), "abilities": list(item.abilities), "category": item.category}


def _malformed(payload: dict, rng: random.Random) -> str:
    """Broken output of the kinds real models produce."""
    text = json.dumps(payload)
    kind = rng.choice(["truncated", "prose", "missing_field"])
    if kind == "truncated":
        return "```json\n" + text[: max(1, len(text) // 2)]
    if kind == "prose":
        return "I think the image shows some shapes, and the question is about them."
    broken = json.loads(text)
    for question in broken.get("questions", []):
        question.pop("answer" if "answer" in question else "question", None)
    broken.pop("verifiable", None)
    broken.pop("missing", None)
    return json.dumps(broken)


def _token_f1(a: str, b: str) -> float:
    ta, tb = _tokens(a), _tokens(b)
    if not ta or not tb:
        return 0.0
    common = sum(min(ta.count(t), tb.count(t)) for t in set(ta))
    if common == 0:
        return 0.0
    precision, recall = common / len(ta), common / len(tb)
    return 2 * precision * recall / (precision + recall)


def _tokens(text: str) -> list[str]:
    return [t for t in "".join(c.lower() if c.isalnum() else " " for c in text).split() if t not in {"the", "a", "an", "is", "of"}]


