"""How a question is put to the policy: the same chat for rollouts, GRPO and the cold-start SFT.

The policy thinks inside <think></think> and answers inside <answer></answer> (the format the
format reward checks). Multiple-choice options are listed with letters; each answer type gets a
one-line instruction on the shape of the answer.
"""

SYSTEM_PROMPT = ("You are a careful visual reasoner. Think step by step inside <think></think>, "
                 "then give only the final answer inside <answer></answer>.")

ANSWER_SHAPE = {
    "mc": "Answer with the letter of the correct option.",
    "num": "Answer with a number.",
    "fib": "Answer with the word or number that fills the blank.",
    "des": "Answer in one sentence.",
    "bbox": "Answer with the box as [x1, y1, x2, y2].",
}


def question_text(question: str, answer_type: str, choices: list[str] | tuple = ()) -> str:
    lines = [question]
    lines += [f"{chr(65 + i)}. {choice}" for i, choice in enumerate(choices)]
    lines.append(ANSWER_SHAPE.get(answer_type, ""))
    return "\n".join(line for line in lines if line)


def policy_messages(question: str, answer_type: str, choices=(), *, image: dict | None = None) -> list[dict]:
    """Chat for the policy. `image`: an image content part, or None for the text-only variant."""
    content = ([image] if image else []) + [{"type": "text", "text": question_text(question, answer_type, choices)}]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def trl_prompt(question: str, answer_type: str, choices=()) -> list[dict]:
    """The same chat in TRL's conversational form: the image is a placeholder, the pixels go in `image`.
    Every content is a list of parts (Arrow, under `datasets`, cannot mix strings and lists in a column)."""
    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question_text(question, answer_type, choices)}]}]
