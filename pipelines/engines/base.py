"""The one engine interface: `generate(requests) -> responses`, batched, one response per request.

A request is an OpenAI-style chat (`messages`) plus sampling parameters. Images in messages are
content parts `{"type": "image", "path": <file>, "sha256": <hex>}`: engines load the file (hf), or
send it as a data URL (openai); the call id uses the sha256, never the bytes.

An engine never raises for a bad answer: a failed call is a `Response` with `error` set, so the
stage turns it into a reject with the raw text. Engines raise `EngineError` only when they cannot
work at all (the model does not load, the server is unreachable after retries).
"""

from dataclasses import dataclass, field
from typing import Protocol

from schemas import make_id


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    n: int = 1                    # completions wanted (a GRPO group is one request with n = G)
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_schema: dict | None = None  # JSON schema: guided decoding where the engine has it
    prompt_version: str = ""
    task: str = ""                # what this is for, e.g. "caption.coarse"; for logs and the scripted teacher
    # Out-of-band facts for the scripted teacher (e.g. {"scene": <json>}): never sent to a model and
    # not part of the call id, since a real model sees only `messages`.
    hints: dict = field(default_factory=dict, compare=False, hash=False)
    # Ask for per-token log-probabilities / last-layer attentions of each completion (the hf engine has
    # them; RAP's attention confidence needs them). Engines that cannot provide them leave them None.
    return_logprobs: bool = False
    return_attentions: bool = False
    # The last message is the assistant's own unfinished turn, to be continued rather than answered
    # (MCTS steps: the steps so far, so the server's prefix cache holds them). Send it only to an
    # engine whose `continues_assistant_prefix` is True (pipelines/mcts.py renders the steps otherwise).
    continue_final_message: bool = False

    def call_id(self, engine: str, model: str, revision: str) -> str:
        """Content address of this call: same engine, model, prompt and sampling -> same id."""
        extras = [name for name in ("return_logprobs", "return_attentions", "continue_final_message") if getattr(self, name)]
        return make_id("call", engine, model, revision, _strip_paths(self.messages), self.n, self.temperature,
                       self.top_p, self.max_tokens, self.seed, list(self.stop), self.response_schema,
                       self.prompt_version, *([extras] if extras else []))  # old ids stay as they were


@dataclass
class Response:
    texts: list[str]              # n completions; empty when `error` is set
    call_id: str
    error: str | None = None      # why the call failed, for the reject's detail
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens
    latency_s: float = 0.0
    # Per completion, when asked for: log-probability of each generated token, and the last layer's
    # attention (averaged over heads) among the generated tokens: row i holds token i's weights on
    # tokens 0..i of the completion (the prompt's share is what is missing from the row's sum).
    token_logprobs: list[list[float]] | None = None
    attentions: list[list[list[float]]] | None = None
    # With `error`: the call may well succeed later (timeout, 5xx, 429, dropped connection), so the
    # call cache records it but asks again on the next run. False: the same call fails the same way
    # (a 400, a content filter, a task the engine cannot do), so the cache replays the error.
    transient: bool = False

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


class Engine(Protocol):
    name: str      # engine kind: scripted, hf, openai, vllm
    model: str     # model name or path
    revision: str  # weights hash or server-reported revision

    def generate(self, requests: list[Request]) -> list[Response]: ...


def _strip_paths(messages: list[dict]) -> list[dict]:
    """Messages with image parts reduced to their sha256, so a moved file keeps its call id."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{"type": "image", "sha256": p["sha256"]} if p.get("type") == "image" else p for p in content]
        out.append({**message, "content": content})
    return out


def image_part(path: str, sha256: str) -> dict:
    return {"type": "image", "path": str(path), "sha256": sha256}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def user(*parts) -> dict:
    return {"role": "user", "content": [text_part(p) if isinstance(p, str) else p for p in parts]}


def system(text: str) -> dict:
    return {"role": "system", "content": text}


def images_of(messages: list[dict]) -> list[dict]:
    return [p for m in messages if isinstance(m["content"], list) for p in m["content"] if p.get("type") == "image"]


def text_of(messages: list[dict]) -> str:
    """All text of a chat, in order (what a text-only engine sees)."""
    chunks = []
    for m in messages:
        if isinstance(m["content"], str):
            chunks.append(m["content"])
        else:
            chunks.extend(p["text"] for p in m["content"] if p.get("type") == "text")
    return "\n".join(chunks)
