"""Ask a model and get a usable answer or a reason why not: parse, validate, retry with feedback.

`ask(engine, requests, parse)` sends a batch; each response goes through `parse` (which raises
`ValueError` with a message for the model when the output is unusable). Unusable outputs are asked
again, with the model's own output and the parse error appended to the chat, at most `max_retries`
times. The result per request is an `Answer`: the parsed value, or the error and the raw output,
which the stage turns into a reject. Never None without a reason, never an empty string.
"""

from dataclasses import dataclass, replace
from typing import Any, Callable

from pipelines.engines.base import Request


@dataclass
class Answer:
    value: Any = None
    raw: str = ""
    error: str | None = None     # why there is no value: the engine's error or the last parse error
    call_id: str | None = None   # the call that produced `raw`
    attempts: int = 0
    engine_failed: bool = False  # the engine could not answer at all (vs. it answered badly)

    @property
    def ok(self) -> bool:
        return self.error is None


def ask(engine, requests: list[Request], parse: Callable[[str], Any], *, max_retries: int = 1) -> list[Answer]:
    answers = [Answer() for _ in requests]
    pending = list(range(len(requests)))
    current = list(requests)
    for attempt in range(max_retries + 1):
        if not pending:
            break
        responses = engine.generate([current[i] for i in pending])
        if len(responses) != len(pending):  # an engine bug, reported per request rather than hidden
            for i in pending[len(responses):]:
                answers[i].error = f"the engine returned {len(responses)} responses for {len(pending)} requests"
                answers[i].engine_failed, answers[i].attempts = True, attempt + 1
        retry = []
        for i, response in zip(pending, responses):
            answer = answers[i]
            answer.attempts, answer.call_id, answer.raw = attempt + 1, response.call_id, response.text
            if response.error:
                answer.error, answer.engine_failed = response.error, True
                continue
            try:
                answer.value, answer.error = parse(response.text), None
            except ValueError as error:
                answer.error = str(error) or "output could not be used"
                retry.append(i)
                current[i] = with_feedback(current[i], response.text, answer.error)
        pending = retry
    return answers


def with_feedback(request: Request, output: str, error: str) -> Request:
    """The same request with the model's output and what was wrong with it appended."""
    messages = list(request.messages) + [
        {"role": "assistant", "content": output},
        {"role": "user", "content": f"That answer could not be used: {error}\nReply again, following the required format exactly."},
    ]
    return replace(request, messages=messages)
