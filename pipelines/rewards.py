r"""Rewards: one pure core per reward, a registry by name, and thin wrappers for TRL and EasyR1.

The cores score one response (the majority vote scores one group) and know nothing of trainers:
`format_reward` (`<think>…</think><answer>…</answer>`), `boxed_format_reward` (`<think>…</think>`
then a `\boxed{}`), `accuracy_reward` (the verification suite), `iou_reward` (bbox answers),
`score` (accuracy and format under a paper's weighting, routed by `reward_route`: ALGORITHMS.md
§1, §2, §5, §8), `majority_vote_rewards` (MM-UPT, §6) and `judge_reward` (descriptive answers).

`REWARDS` names every reward the GRPO stage can train with; `trl_reward(name)` wraps one in the shape
TRL's GRPOTrainer calls, `f(prompts, completions, **columns) -> list[float | None]`, where None means
"not applicable" (TRL skips None when it sums reward functions). `easyr1_compute_score` is the same
`score` in EasyR1's shape (`compute_score({response, response_length, ground_truth}) -> dict`).
"""

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipelines.answers import extract_answer, has_think_answer_format, last_boxed
from pipelines.mmupt import majority_vote
from pipelines.verification import check_answer, check_iou, read_box, read_number

# (accuracy weight, format weight); overall = accuracy_weight·accuracy + format_weight·format.
WEIGHTS = {
    "wethink": (0.7, 0.3),   # WeThink's hybrid reward
    "easyr1": (0.9, 0.1),    # EasyR1's math recipe
    "modomodo": (2.0, 1.0),  # MoDoMoDo: 2.0 accuracy (IoU for boxes), 1.0 format; see ZEROED_WITHOUT_ANSWER
}
# Presets under which a response with no extractable answer gets 0 for every part, format
# included: MoDoMoDo does not pay for well-formed tags around nothing.
ZEROED_WITHOUT_ANSWER = frozenset({"modomodo"})
# Vision-R1's HFRRF is not a weighted sum: overall is 1 only if the format AND the answer are right.
HFRRF = "hfrrf"
ROUTES = ("rule", "model")  # questions.reward_route: the verifiers decide, or a model judge does


# ---------------------------------------------------------------------------------------------
# Cores: one response
# ---------------------------------------------------------------------------------------------

def format_reward(completion: str) -> float:
    """1.0 for `<think>…</think><answer>…</answer>` (R1 format), else 0.0.

    >>> format_reward("<think>two plus two</think> <answer>4</answer>"), format_reward("4")
    (1.0, 0.0)
    """
    return 1.0 if has_think_answer_format(completion) else 0.0


def boxed_format_reward(completion: str) -> float:
    r"""1.0 for a `<think>…</think>` block followed by text with a non-empty `\boxed{…}`, else 0.0.

    The format of EasyR1's math reward and of MM-UPT's prompts: the answer is the last balanced
    `\boxed{}` after the reasoning, not an `<answer>` tag.

    >>> boxed_format_reward(r"<think>3 + 4</think> The total is \boxed{7}.")
    1.0
    >>> boxed_format_reward(r"\boxed{7}"), boxed_format_reward(r"<think>x</think> \boxed{}")
    (0.0, 0.0)
    """
    text = (completion or "").strip()
    if not text.startswith("<think>") or text.count("<think>") != 1 or text.count("</think>") != 1:
        return 0.0
    after = text.split("</think>", 1)[1]
    boxed = last_boxed(after)
    return 1.0 if boxed is not None and boxed.strip() else 0.0


def accuracy_reward(completion: str, solution: str, answer_type: str, choices: Sequence[str] = ()) -> float | None:
    """The verifier's score for the extracted answer: 0/1, or the IoU for boxes; None for "des".

    >>> accuracy_reward("<think>…</think><answer>(B)</answer>", "B", "mc")
    1.0
    >>> accuracy_reward("<answer>7.0</answer>", "8", "num"), accuracy_reward("<answer>a dog</answer>", "a dog", "des")
    (0.0, None)
    """
    check = check_answer(extract_answer(completion), solution, answer_type, choices=choices)
    return None if check is None else check.score


def iou_reward(completion: str, solution: str, answer_type: str = "bbox") -> float | None:
    """Intersection over union of the answered box with the reference box; None when the item is not a box.

    A reply with no `[x1, y1, x2, y2]` in its answer scores 0.

    >>> iou_reward("<answer>[0, 0, 2, 2]</answer>", "[1, 1, 3, 3]")  # 1 / (4 + 4 - 1)
    0.14285714285714285
    >>> iou_reward("<answer>somewhere left</answer>", "[0, 0, 1, 1]"), iou_reward("<answer>3</answer>", "3", "num")
    (0.0, None)
    """
    if answer_type != "bbox":
        return None
    answer = extract_answer(completion)
    return 0.0 if answer is None else check_iou(answer, solution).score


def score(
    response: str,
    ground_truth: str,
    *,
    answer_type: str,
    choices: Sequence[str] = (),
    weights: str = "wethink",
    judge_score: float | None = None,
    reward_route: str | None = None,
) -> dict[str, float | None]:
    r"""`{"overall", "accuracy", "format"}` for one response under a preset from `WEIGHTS` or "hfrrf".

    `reward_route` says who grades the answer (questions.reward_route): "rule", the verifiers; "model",
    a judge, whose tiered score (0..1) is `judge_score`. None routes by answer type: "des" to the
    judge, the rest to the verifiers. When the judge decides and there is no `judge_score`, accuracy
    and overall are None (not applicable); format is still reported.

    >>> score("<think>3 cubes</think><answer>3</answer>", "3", answer_type="num")
    {'overall': 1.0, 'accuracy': 1.0, 'format': 1.0}
    >>> untagged = "There are 3 cubes.\nThe answer is 3."
    >>> score(untagged, "3", answer_type="num", weights="wethink")["overall"]  # right answer, no tags
    0.7
    >>> score(untagged, "3", answer_type="num", weights="hfrrf")["overall"]   # HFRRF: format AND answer
    0.0
    >>> score("<think>hmm</think><answer></answer>", "3", answer_type="num", weights="modomodo")
    {'overall': 0.0, 'accuracy': 0.0, 'format': 0.0}
    >>> score("<think>a</think><answer>3</answer>", "3", answer_type="fib", reward_route="model", judge_score=0.5)
    {'overall': 0.65, 'accuracy': 0.5, 'format': 1.0}
    """
    if weights != HFRRF and weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; known: {', '.join([*WEIGHTS, HFRRF])}")
    if reward_route is not None and reward_route not in ROUTES:
        raise ValueError(f"unknown reward_route {reward_route!r}; known: {', '.join(ROUTES)}")
    answer = extract_answer(response)
    format_score = format_reward(response)
    check = check_answer(answer, ground_truth, answer_type, choices=choices) if reward_route != "model" else None
    accuracy = check.score if check is not None else judge_score
    if accuracy is None:
        return {"overall": None, "accuracy": None, "format": format_score}
    if weights == HFRRF:
        # "Correct" is the verifier's verdict (for boxes: IoU ≥ its threshold), not a partial score.
        correct = check.passed if check is not None else accuracy >= 1.0
        return {"overall": float(correct and format_score == 1.0), "accuracy": accuracy, "format": format_score}
    if answer is None and weights in ZEROED_WITHOUT_ANSWER:
        return {"overall": 0.0, "accuracy": 0.0, "format": 0.0}
    accuracy_weight, format_weight = WEIGHTS[weights]
    overall = accuracy_weight * accuracy + format_weight * format_score
    # rounded so that 0.7·1 + 0.3·1 is 1.0, not 0.9999999999999999, in logs and equality tests
    return {"overall": round(overall, 10), "accuracy": accuracy, "format": format_score}


def judge_reward(judge, completion: str, question: str, solution: str) -> float | None:
    """The judge's tiered score (0, 0.5, 1) of the extracted answer against the reference; None if it could not grade.

    A degenerate answer (none, ":", "Thought process:", the question echoed) scores 0 without a call:
    those are the strings known to fool model judges (pipelines/verification.py, the verify stage).
    """
    from pipelines.stages.verify import judge_score  # the verify stage owns the judge's prompt

    return judge_score(judge, question, solution, extract_answer(completion), scene=None).score


# ---------------------------------------------------------------------------------------------
# Core: one group (MM-UPT's majority vote)
# ---------------------------------------------------------------------------------------------

def majority_vote_rewards(completions: Sequence[str], answer_type: str = "fib", choices: Sequence[str] = (), *,
                          no_answer_guard: bool = True) -> list[float]:
    """MM-UPT's self-reward for one group of responses to one prompt: 1 if a response's answer
    equals the group's most frequent answer (the pseudo-label), else 0. No reference is used.

    With `no_answer_guard` (the default), "no answer" never wins the vote: a group where most
    responses say nothing rewards the few that answered and agree, and nobody when none answered.
    Without it (MM-UPT's own code), "no answer" is one more option and, when it is the most frequent,
    every response that gave no answer is rewarded: the policy learns to stop answering.

    >>> majority_vote_rewards(["<answer>7</answer>", "<answer>7.0</answer>", "<answer>8</answer>"], "num")
    [1.0, 1.0, 0.0]
    >>> silent = ["<answer></answer>", "no idea", "hmm", "<answer>5</answer>"]
    >>> majority_vote_rewards(silent, "num")
    [0.0, 0.0, 0.0, 1.0]
    """
    answers = [extract_answer(text) for text in completions]
    label, share = majority_vote(answers, answer_type, tuple(choices))
    if not no_answer_guard:
        warnings.warn("majority vote without the no-answer guard: when most responses of a group give no answer, "
                      "giving no answer is what gets rewarded (MM-UPT's code does this; the guard is on by default)",
                      UserWarning, stacklevel=2)
        if answers.count(None) > round(share * len(answers)):  # ties go to an answer
            return [float(answer is None) for answer in answers]
    if label is None:
        return [0.0] * len(answers)
    return [float(answer is not None and _equivalent(answer, label, answer_type, choices)) for answer in answers]


def _equivalent(answer: str, label: str, answer_type: str, choices: Sequence[str]) -> bool:
    # The same test majority_vote pools answers with: the verifier, or normalised text for "des".
    check = check_answer(answer, label, answer_type, choices=tuple(choices))
    return check.passed if check is not None else answer.strip().lower() == label.strip().lower()


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reward:
    """A reward over a batch: `score(texts, columns, judge, no_answer_guard) -> list[float | None]`.

    `columns` are the dataset columns it needs (each a list, one entry per completion); `needs_judge`
    says it asks the judge role for some items (descriptive answers, or reward_route "model").
    """

    name: str
    score: Callable[..., list[float | None]]
    columns: tuple[str, ...] = ()
    needs_judge: bool = False
    doc: str = ""


def _per_response(core: Callable[..., float | None]) -> Callable[..., list[float | None]]:
    """Lift a core over one response to a batch function (columns as lists)."""

    def batch(texts, columns, judge, no_answer_guard):
        return [core(text, row) for text, row in zip(texts, _rows(columns, len(texts)))]

    return batch


def _hybrid(weights: str) -> Callable[..., list[float | None]]:
    def batch(texts, columns, judge, no_answer_guard):
        scores = []
        for text, row in zip(texts, _rows(columns, len(texts))):
            route = row["reward_route"] or ("model" if row["answer_type"] == "des" else "rule")
            judged = (judge_reward(judge, text, row["question"] or "", row["solution"])
                      if route == "model" and judge is not None else None)
            scores.append(score(text, row["solution"], answer_type=row["answer_type"], choices=row["choices"],
                                weights=weights, judge_score=judged, reward_route=route)["overall"])
        return scores

    return batch


def _judge_batch(texts, columns, judge, no_answer_guard):
    scores = []
    for text, row in zip(texts, _rows(columns, len(texts))):
        descriptive = row["answer_type"] == "des" or row["reward_route"] == "model"
        scores.append(judge_reward(judge, text, row["question"] or "", row["solution"]) if descriptive else None)
    return scores


def _majority_vote_batch(texts, columns, judge, no_answer_guard):
    """TRL passes the whole batch: group the completions by question (each group is one prompt's G)."""
    rows = _rows(columns, len(texts))
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(row["group"], []).append(index)
    scores: list[float | None] = [None] * len(texts)
    for members in groups.values():
        first = rows[members[0]]
        group_scores = majority_vote_rewards([texts[i] for i in members], first["answer_type"] or "fib",
                                             first["choices"], no_answer_guard=no_answer_guard)
        for index, value in zip(members, group_scores):
            scores[index] = value
    return scores


REWARDS: dict[str, Reward] = {r.name: r for r in (
    Reward("format", _per_response(lambda text, row: format_reward(text)), doc="<think>…</think><answer>…</answer>"),
    Reward("format_boxed", _per_response(lambda text, row: boxed_format_reward(text)), doc=r"<think>…</think> then \boxed{}"),
    Reward("accuracy", _per_response(lambda text, row: accuracy_reward(text, row["solution"], row["answer_type"], row["choices"])),
           ("solution", "answer_type"), doc="the verification suite; None for descriptive answers"),
    Reward("iou", _per_response(lambda text, row: iou_reward(text, row["solution"], row["answer_type"])),
           ("solution", "answer_type"), doc="IoU of the answered box; None for non-box items"),
    Reward("hybrid_wethink", _hybrid("wethink"), ("solution", "answer_type"), True, "0.7 accuracy + 0.3 format, by reward_route"),
    Reward("hybrid_easyr1", _hybrid("easyr1"), ("solution", "answer_type"), True, "0.9 accuracy + 0.1 format, by reward_route"),
    Reward("hybrid_modomodo", _hybrid("modomodo"), ("solution", "answer_type"), True,
           "2 accuracy/IoU + 1 format; no extracted answer zeroes all"),
    Reward("hfrrf", _per_response(lambda text, row: score(text, row["solution"], answer_type=row["answer_type"],
                                                          choices=row["choices"], weights=HFRRF)["overall"]),
           ("solution", "answer_type"), doc="1 only if format AND answer are right (Vision-R1)"),
    Reward("majority_vote", _majority_vote_batch, doc="MM-UPT: agree with the group's most frequent answer; no labels"),
    Reward("judge", _judge_batch, ("solution", "answer_type", "question"), True, "the judge's score for descriptive items"),
)}


def _rows(columns: dict[str, list], n: int) -> list[dict]:
    """Per-completion views of the columns, with the optional ones defaulted."""
    def column(name, default):
        values = columns.get(name)
        return list(values) if values is not None else [default] * n

    solution, answer_type, choices = column("solution", ""), column("answer_type", ""), column("choices", None)
    question, route = column("question", None), column("reward_route", None)
    # MM-UPT groups by prompt; the question id tells prompts apart that share a text but not an image.
    group = columns.get("question_id") or [_prompt_key(p) for p in columns.get("prompts") or [None] * n]
    return [{"solution": solution[i], "answer_type": answer_type[i], "choices": tuple(choices[i] or ()),
             "question": question[i], "reward_route": route[i], "group": group[i]} for i in range(n)]


def _prompt_key(prompt) -> str:
    if prompt is None or isinstance(prompt, str):
        return str(prompt)
    return "\n".join(completion_text([message]) for message in prompt)


def unknown_reward_error(name: str) -> ValueError:
    return ValueError(f"unknown reward {name!r}; known: {', '.join(REWARDS)}")


# ---------------------------------------------------------------------------------------------
# TRL wrapper
# ---------------------------------------------------------------------------------------------

def trl_reward(kind: str, *, judge=None, no_answer_guard: bool = True) -> Callable[..., list[float | None]]:
    """A reward from `REWARDS` as TRL's GRPOTrainer calls it: `f(prompts, completions, **columns)`.

    Completions may be strings or chats (`[{"role": "assistant", "content": …}]`); dataset columns
    (`solution`, `answer_type`, optional `choices`, `question`, `reward_route`, `question_id`) arrive
    as lists, one entry per completion. `judge`: the engine that grades descriptive answers (rewards
    with `needs_judge`; without one those items get None). `no_answer_guard`: majority vote only.

    >>> reward = trl_reward("hfrrf")
    >>> reward.__name__
    'hfrrf_reward'
    >>> reward(["Q?", "Q?"], [[{"role": "assistant", "content": "<think>…</think><answer>B</answer>"}], "B"],
    ...        solution=["B", "B"], answer_type=["mc", "mc"])
    [1.0, 0.0]
    """
    if kind not in REWARDS:
        raise unknown_reward_error(kind)
    reward_spec = REWARDS[kind]
    if kind == "majority_vote" and not no_answer_guard:
        warnings.warn("majority_vote reward built with no_answer_guard=False: groups where most responses give no "
                      "answer will reward giving no answer", UserWarning, stacklevel=2)

    def reward(prompts: list, completions: list, **columns) -> list[float | None]:
        missing = [name for name in reward_spec.columns if name not in columns]
        if missing:
            raise ValueError(
                f"reward {kind!r} needs dataset columns {', '.join(reward_spec.columns)}; missing: "
                f"{', '.join(missing)} (columns passed: {', '.join(sorted(columns)) or 'none'})"
            )
        texts = [completion_text(completion) for completion in completions]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # said once, when the reward was built
            return reward_spec.score(texts, {**columns, "prompts": prompts}, judge, no_answer_guard)

    reward.__name__ = reward.__qualname__ = f"{kind}_reward"
    reward.__doc__ = f"TRL reward function {kind!r} (thinkmill pipelines.rewards): {reward_spec.doc}."
    return reward


def completion_text(completion: str | list[dict]) -> str:
    """The text of a completion: the string itself, or the last assistant message of a chat.

    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "<answer>4</answer>"}]}])
    '<answer>4</answer>'
    """
    if isinstance(completion, str):
        return completion
    assistant = [message for message in completion if message.get("role") == "assistant"] or completion
    content = assistant[-1].get("content") if assistant else ""
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content or ""


# ---------------------------------------------------------------------------------------------
# EasyR1 wrapper
# ---------------------------------------------------------------------------------------------

def easyr1_compute_score(reward_inputs: dict | list[dict], preset: str = "easyr1") -> dict | list[dict]:
    r"""`score` in EasyR1's reward-function shape (`worker.reward.reward_function=…:easyr1_compute_score`).

    EasyR1 calls it with one dict (`reward_type=sequential`) or a list of them (`reward_type=batch`),
    each with `response`, `response_length` and `ground_truth`, and wants `{"overall", "format",
    "accuracy"}` floats back (pass `preset` through `reward_function_kwargs`). An `answer_type` key is
    used when present; otherwise it is read off the reference (`infer_answer_type`). EasyR1 has no
    "not applicable", so a descriptive answer with no judge scores 0 accuracy.

    >>> easyr1_compute_score({"response": "<think>3 + 4</think><answer>7</answer>", "response_length": 9, "ground_truth": "7"})
    {'overall': 1.0, 'format': 1.0, 'accuracy': 1.0}
    >>> easyr1_compute_score([{"response": "The answer is 7.", "response_length": 5, "ground_truth": "7"}])
    [{'overall': 0.9, 'format': 0.0, 'accuracy': 1.0}]
    """
    if isinstance(reward_inputs, list):
        return [easyr1_compute_score(reward_input, preset) for reward_input in reward_inputs]
    if not isinstance(reward_inputs, dict) or "response" not in reward_inputs or "ground_truth" not in reward_inputs:
        raise ValueError(f"EasyR1 reward input must be a dict with 'response' and 'ground_truth' (or a list of them); "
                         f"got {type(reward_inputs).__name__}")
    ground_truth = str(reward_inputs["ground_truth"])
    answer_type = reward_inputs.get("answer_type") or infer_answer_type(ground_truth)
    parts = score(reward_inputs["response"], ground_truth, answer_type=answer_type, weights=preset)
    return {name: float(parts[name] or 0.0) for name in ("overall", "format", "accuracy")}


def infer_answer_type(ground_truth: str) -> str:
    """The answer type a bare reference implies: a lone letter → mc, a box → bbox, a number → num, else fib.

    >>> [infer_answer_type(t) for t in ["B", "[1, 2, 3, 4]", "12.5", "the red cube"]]
    ['mc', 'bbox', 'num', 'fib']
    """
    text = ground_truth.strip()
    if len(text) == 1 and text.isalpha() and text.isupper():
        return "mc"
    if text.startswith("[") and read_box(text) is not None:
        return "bbox"
    if read_number(text) is not None:
        return "num"
    return "fib"
