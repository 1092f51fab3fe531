"""Rewards: pure cores over one response, and a thin wrapper in the shape TRL's GRPOTrainer calls.

`format_reward` and `accuracy_reward` score one completion; `score` combines them under a named
weighting from a paper (ALGORITHMS.md §1, §2, §5, §8); `trl_reward(kind)` turns a core into
`f(prompts, completions, **columns) -> list[float | None]`, where None means "not applicable"
(TRL skips None when it sums reward functions). Descriptive ("des") answers get None for accuracy
here: a model judge scores them, and `score(..., judge_score=…)` takes its verdict.
"""

from typing import Callable, Sequence

from pipelines.answers import extract_answer, has_think_answer_format
from pipelines.verification import check_answer

# (accuracy weight, format weight); overall = accuracy_weight·accuracy + format_weight·format.
WEIGHTS = {
    "wethink": (0.7, 0.3),   # WeThink's hybrid reward
    "easyr1": (0.9, 0.1),    # EasyR1's math recipe
    "modomodo": (2.0, 1.0),  # MoDoMoDo: 2.0 accuracy (or IoU), 1.0 format; see ZEROED_WITHOUT_ANSWER
}
# Presets under which a response with no extractable answer gets 0 for every part, format
# included: MoDoMoDo does not pay for well-formed tags around nothing.
ZEROED_WITHOUT_ANSWER = frozenset({"modomodo"})
# Vision-R1's HFRRF is not a weighted sum: overall is 1 only if the format AND the answer are right.
HFRRF = "hfrrf"


def format_reward(completion: str) -> float:
    """1.0 for `<think>…</think><answer>…</answer>` (R1 format), else 0.0.

    >>> format_reward("<think>two plus two</think> <answer>4</answer>"), format_reward("4")
    (1.0, 0.0)
    """
    return 1.0 if has_think_answer_format(completion) else 0.0


def accuracy_reward(completion: str, solution: str, answer_type: str, choices: Sequence[str] = ()) -> float | None:
    """The verifier's score for the extracted answer: 0/1, or the IoU for boxes; None for "des".

    >>> accuracy_reward("<think>…</think><answer>(B)</answer>", "B", "mc")
    1.0
    >>> accuracy_reward("<answer>7.0</answer>", "8", "num"), accuracy_reward("<answer>a dog</answer>", "a dog", "des")
    (0.0, None)
    """
    check = check_answer(extract_answer(completion), solution, answer_type, choices=choices)
    return None if check is None else check.score


def score(
    response: str,
    ground_truth: str,
    *,
    answer_type: str,
    choices: Sequence[str] = (),
    weights: str = "wethink",
    judge_score: float | None = None,
) -> dict[str, float | None]:
    r"""`{"overall", "accuracy", "format"}` for one response under a preset from `WEIGHTS` or "hfrrf".

    For "des", accuracy is `judge_score` (WeThink's tiered judge score, 0..1); without one, accuracy
    and overall are None (not applicable), and format is still reported.

    >>> score("<think>3 cubes</think><answer>3</answer>", "3", answer_type="num")
    {'overall': 1.0, 'accuracy': 1.0, 'format': 1.0}
    >>> untagged = "There are 3 cubes.\nThe answer is 3."
    >>> score(untagged, "3", answer_type="num", weights="wethink")["overall"]  # right answer, no tags
    0.7
    >>> score(untagged, "3", answer_type="num", weights="hfrrf")["overall"]   # HFRRF: format AND answer
    0.0
    >>> score("<think>hmm</think><answer></answer>", "3", answer_type="num", weights="modomodo")
    {'overall': 0.0, 'accuracy': 0.0, 'format': 0.0}
    """
    if weights != HFRRF and weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; known: {', '.join([*WEIGHTS, HFRRF])}")
    answer = extract_answer(response)
    format_score = format_reward(response)
    check = check_answer(answer, ground_truth, answer_type, choices=choices)
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


# ---------------------------------------------------------------------------------------------
# TRL wrapper
# ---------------------------------------------------------------------------------------------

def _format_one(completion: str, solution: str, answer_type: str, choices: Sequence[str]) -> float | None:
    return format_reward(completion)


def _accuracy_one(completion: str, solution: str, answer_type: str, choices: Sequence[str]) -> float | None:
    return accuracy_reward(completion, solution, answer_type, choices)


def _hybrid_wethink_one(completion: str, solution: str, answer_type: str, choices: Sequence[str]) -> float | None:
    return score(completion, solution, answer_type=answer_type, choices=choices, weights="wethink")["overall"]


def _hfrrf_one(completion: str, solution: str, answer_type: str, choices: Sequence[str]) -> float | None:
    return score(completion, solution, answer_type=answer_type, choices=choices, weights=HFRRF)["overall"]


# kind → (per-completion core, dataset columns it needs)
REWARD_KINDS: dict[str, tuple[Callable[..., float | None], tuple[str, ...]]] = {
    "format": (_format_one, ()),
    "accuracy": (_accuracy_one, ("solution", "answer_type")),
    "hybrid_wethink": (_hybrid_wethink_one, ("solution", "answer_type")),
    "hfrrf": (_hfrrf_one, ("solution", "answer_type")),
}


def trl_reward(kind: str) -> Callable[..., list[float | None]]:
    """A reward function as TRL's GRPOTrainer calls it: `f(prompts, completions, **columns)`.

    Completions may be strings or chats (`[{"role": "assistant", "content": …}]`); the columns
    `solution`, `answer_type` and optional `choices` arrive as lists, one entry per completion.

    >>> reward = trl_reward("hfrrf")
    >>> reward.__name__
    'hfrrf_reward'
    >>> reward(["Q?", "Q?"], [[{"role": "assistant", "content": "<think>…</think><answer>B</answer>"}], "B"],
    ...        solution=["B", "B"], answer_type=["mc", "mc"])
    [1.0, 0.0]
    """
    if kind not in REWARD_KINDS:
        raise ValueError(f"unknown reward kind {kind!r}; known: {', '.join(REWARD_KINDS)}")
    score_one, needed_columns = REWARD_KINDS[kind]

    def reward(prompts: list, completions: list, **columns) -> list[float | None]:
        missing = [name for name in needed_columns if name not in columns]
        if missing:
            raise ValueError(
                f"reward {kind!r} needs dataset columns {', '.join(needed_columns)}; missing: "
                f"{', '.join(missing)} (columns passed: {', '.join(sorted(columns)) or 'none'})"
            )
        n_completions = len(completions)
        solutions = columns.get("solution") or [""] * n_completions
        answer_types = columns.get("answer_type") or [""] * n_completions
        choices = columns.get("choices") or [()] * n_completions
        return [
            score_one(completion_text(completion), solution, answer_type, options or ())
            for completion, solution, answer_type, options in zip(completions, solutions, answer_types, choices)
        ]

    reward.__name__ = reward.__qualname__ = f"{kind}_reward"
    reward.__doc__ = f"TRL reward function {kind!r} (thinkmill pipelines.rewards)."
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
