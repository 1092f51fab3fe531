"""MM-UPT-style synthetic questions (ALGORITHMS §6): questions the VLM writes itself, labelled by majority vote.

Two ways to ask for them: *direct* (image → questions) and *in-context* (image + an example QA →
new questions in its style). There is no reference answer: the VLM answers each question `votes`
times, the most frequent extracted answer becomes the pseudo-label, and a question is kept only when
that answer wins at least `min_agreement` of the votes. "No answer" cannot win the vote (MM-UPT's
own code lets it; the guard is on by default here, as the method fails when most samples say
nothing). The label is only as good as the majority: MM-UPT fails on hard data where p(correct) <
0.5, so recipes should prefer it for easy-to-medium images.
"""

from collections import Counter

from pydantic import BaseModel, ValidationError

from pipelines.answers import extract_answer, parse_json_object
from pipelines.engines.base import Request, user
from pipelines.policy.prompt import question_text
from pipelines.structured import ask
from pipelines.verification import answer_clusters

PROMPT_VERSION = "mmupt-v1"
EXAMPLE = {"question": "How many red objects are left of the largest blue one?", "answer_type": "num"}


class Unlabelled(BaseModel):
    question: str
    answer_type: str
    choices: list[str] = []
    abilities: list[str] = []
    category: str = "general"


class UnlabelledReply(BaseModel):
    questions: list[Unlabelled]


def parse_unlabelled(text: str) -> list[Unlabelled]:
    data = parse_json_object(text)
    if not isinstance(data.get("questions"), list) or not data["questions"]:
        raise ValueError('expected {"questions": [ ... ]} with at least one question')
    try:
        return [Unlabelled.model_validate(q) for q in data["questions"]]
    except ValidationError as error:
        first = error.errors()[0]
        raise ValueError(f"a question: {'field ' + repr(first['loc'][-1]) if first['loc'] else 'not an object'}: {first['msg']}") from None


def write_unlabelled(sources, vlm, media_path, *, n: int, answer_types, in_context: bool, max_retries: int):
    """Ask the VLM for `n` questions per image (or video), directly or after an example."""
    def prompt(medium: str) -> str:
        example = (f"Here is an example of the kind of question wanted: {EXAMPLE['question']} (answer type {EXAMPLE['answer_type']}).\n"
                   if in_context else "")
        return (f"{example}Write {n} new reasoning questions about this {medium}, each with exactly one correct answer "
                f"that can be read or worked out from the {medium}. Answer types: {', '.join(answer_types)} "
                "(mc needs 4 options in \"choices\").\n"
                'Reply with JSON only: {"questions": [{"question": "...", "answer_type": "...", "choices": [], "abilities": [], "category": "..."}]}')

    requests = [Request(messages=[user(*s.shown(media_path), prompt(s.medium))], max_tokens=1024, prompt_version=PROMPT_VERSION,
                        task="synthesize_qa.mmupt_write",
                        response_schema=UnlabelledReply.model_json_schema(), hints={"scene": s.asset["scene"], "n_questions": n}) for s in sources]
    return ask(vlm, requests, parse_unlabelled, max_retries=max_retries)


def majority_labels(items, vlm, media_path, *, votes: int, temperature: float, min_agreement: float):
    """Per (source, question): (label, share of votes) or (None, why not)."""
    requests = [Request(messages=[user(*s.shown(media_path), question_text(q.question, q.answer_type, q.choices) +
                                       "\nThink briefly inside <think></think>, then give only the final answer inside <answer></answer>.")],
                        n=votes, temperature=temperature, max_tokens=512, prompt_version=PROMPT_VERSION, task="synthesize_qa.answer",
                        hints={"scene": s.asset["scene"], "question": q.question}) for s, q in items]
    results = []
    for (source, question), response in zip(items, vlm.generate(requests) if requests else []):
        if response.error:
            results.append((None, f"the answers could not be sampled: {response.error}"))
            continue
        label, share = majority_vote([extract_answer(t) for t in response.texts], question.answer_type, question.choices)
        if label is None:
            results.append((None, "no sample gave an answer"))
        elif share < min_agreement:
            results.append((None, f"the most common answer {label!r} won only {share:.0%} of {votes} votes (need {min_agreement:.0%})"))
        else:
            results.append((label, share))
    return results


def majority_vote(answers: list[str | None], answer_type: str = "fib", choices=()) -> tuple[str | None, float]:
    """Most frequent answer (equivalent answers pooled) and its share of *all* votes; no-answer never wins.

    >>> majority_vote(["7", "7.0", None, None, None, "8"], "num")
    ('7', 0.3333333333333333)
    >>> majority_vote([None, None], "num")
    (None, 0.0)
    """
    clusters = answer_clusters(answers, answer_type, choices=tuple(choices))
    if not clusters:
        return None, 0.0
    best = max(clusters, key=len)  # ties: the first cluster formed wins (deterministic)
    return Counter(best).most_common(1)[0][0], len(best) / len(answers)
