"""The `hf` engine: in-process transformers generation, batched, on CPU or GPU.

Loads a VLM with `AutoProcessor` + `AutoModelForImageTextToText` (a text-only model with
`AutoTokenizer` + `AutoModelForCausalLM`) and answers `Request`s in batches of `batch_size` rows, a
row being one of a request's `n` samples. Prompts are left-padded, so every row's new tokens start
at the same column.

Sampling is seeded per row, not per batch: the k-th sample of a request draws its noise from a
generator seeded by (request.seed, k) and picks argmax(logits / T + Gumbel noise), which is an exact
draw from softmax(logits / T) (the Gumbel-max trick). So the same request with the same seed gives
the same texts whatever else shares its batch, up to float rounding: padding changes the shapes of
the matrix products, and a rare near-tie may flip. `temperature == 0` is greedy; `top_p` keeps the
smallest set of tokens whose probability reaches p. `stop` strings end a row as soon as they appear
and are cut from the text, stop string included (OpenAI's convention).

A request may carry several images (a video's frames, pipelines/visuals.py): the processor gets them
in order and LLaVA expands one <image> placeholder per image, so prompts grow by an image's tokens
per frame (the tiny policy: 16 patch tokens plus its template's); rows of one batch keep their own
pixels, concatenated in row order.

A request that cannot run (an image that does not open, a prompt longer than the context, images
sent to a text-only model) comes back as a `Response` with `error`; the rest of the batch is still
answered. Only a model that does not load raises (`EngineUnavailable`). `response_schema` is not
enforced here (no guided decoding in transformers' generate): the stage's parser validates.
`latency_s` is the request's share of the wall time of the batches its rows ran in.
"""

import copy
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    LogitsProcessor,
    StoppingCriteria,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from pipelines.engines.base import Request, Response
from pipelines.policy.tiny_llava import weights_hash
from schemas.errors import EngineUnavailable


@dataclass
class _Row:
    """One sample to generate: the k-th of request `index`'s n."""

    index: int
    k: int
    prompt_ids: torch.Tensor        # 1-D, image tokens already expanded
    pixel_values: torch.Tensor | None
    seed: int
    request: Request


class HFEngine:
    name = "hf"
    continues_assistant_prefix = True  # a request may end with the assistant's unfinished turn (chat template)

    def __init__(self, model: str, *, device: str = "auto", dtype: str | None = None, batch_size: int = 16,
                 max_new_tokens_cap: int | None = None):
        """`model`: a save_pretrained folder (or a hub name already in the local cache; we never download).

        `device`: "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1"...; `dtype`: a torch dtype
        name, default bfloat16 on CUDA and float32 on CPU. `batch_size` counts rows (samples), not
        requests. `max_new_tokens_cap` lowers any request's `max_tokens` above it (a guard for slow
        machines; the call id still records what the request asked for).
        """
        self.model = str(model)
        self.batch_size = batch_size
        self.max_new_tokens_cap = max_new_tokens_cap
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        if self.device.type == "cpu":
            # Small models on a few cores run many times faster single-threaded (measured 8-40x on 2
            # cores), and Prefect already runs shards in parallel. THINKMILL_TORCH_THREADS overrides.
            torch.set_num_threads(int(os.environ.get("THINKMILL_TORCH_THREADS", "1")))
        default_dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self._dtype = getattr(torch, dtype or default_dtype, None)
        if not isinstance(self._dtype, torch.dtype):
            raise ValueError(f"hf engine: unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        self._lock = threading.Lock()  # Prefect runs tasks in threads; one generate at a time per model
        self._model, self._processor, self.with_vision = _load(self.model, self.device, self._dtype)
        self._tokenizer = getattr(self._processor, "tokenizer", self._processor)
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        local = Path(self.model)
        self.revision = (weights_hash(local) if local.is_dir()
                         else getattr(self._model.config, "_commit_hash", None) or "unversioned")

    def generate(self, requests: list[Request]) -> list[Response]:
        with self._lock:
            rows, errors = [], {}
            for index, request in enumerate(requests):
                try:
                    rows.extend(self._rows(index, request))
                except Exception as exc:  # bad input is a rejected request, never a crashed batch
                    errors[index] = f"{type(exc).__name__}: {exc}"
            prompt_tokens = {row.index: len(row.prompt_ids) for row in rows}
            texts, n_tokens, latency = self._generate_rows(rows, errors)
            responses = [self._response(i, r, texts, n_tokens, prompt_tokens, latency, errors)
                         for i, r in enumerate(requests)]
            for request, response in zip(requests, responses):
                if not response.error and (request.return_logprobs or request.return_attentions):
                    self._add_details(request, response)
            return responses

    # --- log-probabilities and attentions -------------------------------------------------------------

    def _add_details(self, request: Request, response: Response) -> None:
        """Teacher-force each completion after its prompt and read token log-probs and attentions."""
        logprobs, attentions = [], []
        for text in response.texts:
            token_logprobs, attention = self.inspect(request.messages, text, attentions=request.return_attentions)
            logprobs.append(token_logprobs)
            attentions.append(attention)
        response.token_logprobs = logprobs if request.return_logprobs else None
        response.attentions = attentions if request.return_attentions else None

    def inspect(self, messages: list[dict], completion: str, *, attentions: bool = True):
        """(log-prob of each completion token, last-layer head-mean attention among completion tokens)."""
        prompt_ids, pixel_values = self._encode(messages)
        completion_ids = torch.tensor(self._tokenizer(completion, add_special_tokens=False)["input_ids"], dtype=torch.long)
        ids = torch.cat([prompt_ids, completion_ids]).unsqueeze(0).to(self.device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if pixel_values is not None:
            inputs["pixel_values"] = pixel_values.to(self.device, self._dtype)
        start, length = len(prompt_ids), len(completion_ids)
        previous = self._model.config._attn_implementation
        if attentions and previous != "eager":
            self._model.set_attn_implementation("eager")  # sdpa cannot return attention weights
        try:
            with torch.inference_mode():
                output = self._model(**inputs, output_attentions=attentions)
        finally:
            if attentions and previous != "eager":
                self._model.set_attn_implementation(previous)
        log_probs = torch.log_softmax(output.logits[0, start - 1:start + length - 1].float(), dim=-1)
        token_logprobs = log_probs.gather(1, completion_ids.to(log_probs.device).unsqueeze(1)).squeeze(1).tolist()
        attention = None
        if attentions:
            last = output.attentions[-1][0].float().mean(dim=0)  # heads averaged: (tokens, tokens)
            attention = last[start:start + length, start:start + length].tolist()
        return token_logprobs, attention

    # --- inputs -------------------------------------------------------------------------------------

    def _rows(self, index: int, request: Request) -> list[_Row]:
        prompt_ids, pixel_values = self._encode(request.messages, continue_final_message=request.continue_final_message)
        limit = getattr(self._model.config.get_text_config(), "max_position_embeddings", None)
        if limit and len(prompt_ids) + self._max_new_tokens(request) > limit:
            raise ValueError(f"prompt ({len(prompt_ids)} tokens) + max_tokens exceeds the context of {limit} tokens")
        seed = request.seed if request.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        return [_Row(index, k, prompt_ids, pixel_values, _row_seed(seed, k), request) for k in range(request.n)]

    def _encode(self, messages: list[dict], *, continue_final_message: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token ids (image placeholders expanded) and pixel values of one chat. With `continue_final_message`
        the prompt ends inside the last (assistant) message instead of opening a new turn."""
        chat, images = _split_images(messages)
        turn = {"add_generation_prompt": not continue_final_message, "continue_final_message": continue_final_message}
        if images and not self.with_vision:
            raise ValueError(f"{self.model} is a text-only model and the request has {len(images)} image(s)")
        if not self.with_vision:
            chat = [{**m, "content": _flat_text(m["content"])} for m in chat]
            ids = self._tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True, **turn)
            return torch.tensor(ids["input_ids"]), None
        text = self._processor.apply_chat_template(chat, tokenize=False, **turn)
        encoded = self._processor(text=text, images=[_open_image(p) for p in images] or None, return_tensors="pt")
        return encoded["input_ids"][0], encoded.get("pixel_values")

    def _max_new_tokens(self, request: Request) -> int:
        cap = self.max_new_tokens_cap
        return min(request.max_tokens, cap) if cap else request.max_tokens

    # --- generation ---------------------------------------------------------------------------------

    def _generate_rows(self, rows: list[_Row], errors: dict[int, str]):
        """Run rows in batches; a batch that fails is retried one request at a time."""
        texts, n_tokens, latency = {}, {}, {}
        # Similar lengths together: less padding, fewer wasted steps. Results do not depend on the order.
        rows = sorted(rows, key=lambda r: (self._max_new_tokens(r.request), len(r.prompt_ids), r.index, r.k))
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            try:
                self._run_batch(batch, texts, n_tokens, latency)
            except Exception:
                for index in sorted({r.index for r in batch}):
                    try:
                        self._run_batch([r for r in batch if r.index == index], texts, n_tokens, latency)
                    except Exception as exc:
                        errors[index] = f"generation failed: {type(exc).__name__}: {exc}"
        return texts, n_tokens, latency

    def _run_batch(self, batch: list[_Row], texts: dict, n_tokens: dict, latency: dict) -> None:
        started = time.perf_counter()
        pad = self._tokenizer.pad_token_id
        width = max(len(r.prompt_ids) for r in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):  # left padding
            input_ids[i, width - len(row.prompt_ids):] = row.prompt_ids
            attention_mask[i, width - len(row.prompt_ids):] = 1
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        pixels = [r.pixel_values for r in batch if r.pixel_values is not None]
        if pixels:
            inputs["pixel_values"] = torch.cat(pixels).to(self.device, self._dtype)
        max_new = [self._max_new_tokens(r.request) for r in batch]
        stops = [tuple(r.request.stop) for r in batch]
        limits = _RowLimits(width, max_new, stops, self._tokenizer)
        with torch.inference_mode():
            output = self._model.generate(
                **inputs, generation_config=self._generation_config(max(max_new)),
                logits_processor=[_SeededSampler([r.request for r in batch], [r.seed for r in batch])],
                stopping_criteria=[limits],
            )
        elapsed = time.perf_counter() - started
        for i, row in enumerate(batch):
            text, count = self._decode(output[i, width:], limits.lengths[i] or max_new[i], stops[i])
            texts[(row.index, row.k)], n_tokens[(row.index, row.k)] = text, count
            latency[row.index] = latency.get(row.index, 0.0) + elapsed / len(batch)

    def _generation_config(self, max_new_tokens: int):
        # Greedy over logits our `_SeededSampler` already perturbed; the model's own sampling
        # settings would sample a second time.
        config = copy.deepcopy(self._model.generation_config)
        config.update(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None, max_new_tokens=max_new_tokens,
                      pad_token_id=self._tokenizer.pad_token_id, num_return_sequences=1)
        image_token_id = getattr(self._model.config, "image_token_id", None)
        if image_token_id is not None:  # a sampled placeholder would have no image features behind it
            config.suppress_tokens = [image_token_id]
        return config

    def _decode(self, new_ids: torch.Tensor, length: int, stops: tuple[str, ...]) -> tuple[str, int]:
        """Text of one row's first `length` new tokens cut at eos and the first stop string; its token count.

        Past its end a row holds pad tokens (the batch runs until its last row is done).
        """
        ids = new_ids.tolist()[:length]
        eos = _as_set(self._model.generation_config.eos_token_id) | _as_set(self._tokenizer.eos_token_id)
        end = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
        ids = ids[:end]
        text = self._tokenizer.decode(ids, skip_special_tokens=True)
        return _cut_at_stop(text, stops), len(ids)

    def _response(self, index, request, texts, n_tokens, prompt_tokens, latency, errors) -> Response:
        call_id = request.call_id(self.name, self.model, self.revision)
        if index in errors:
            return Response(texts=[], call_id=call_id, error=errors[index], latency_s=latency.get(index, 0.0))
        return Response(
            texts=[texts[(index, k)] for k in range(request.n)],
            call_id=call_id,
            usage={"prompt_tokens": prompt_tokens.get(index, 0),
                   "completion_tokens": sum(n_tokens[(index, k)] for k in range(request.n))},
            latency_s=latency.get(index, 0.0),
        )


class _SeededSampler(LogitsProcessor):
    """Per-row temperature, top-p and seeded Gumbel noise; generate() then takes the argmax.

    argmax(logits / T + Gumbel) is distributed as softmax(logits / T), and each row's noise comes
    from its own generator, so a row's sample does not depend on the other rows of the batch.
    """

    def __init__(self, requests: list[Request], seeds: list[int]):
        self.requests = requests
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        out = scores.clone()
        for i, (request, generator) in enumerate(zip(self.requests, self.generators)):
            if request.temperature <= 0:
                continue  # greedy: plain argmax
            logits = scores[i] / request.temperature
            if request.top_p < 1.0:
                logits = _top_p_filter(logits, request.top_p)
            uniform = torch.rand(logits.shape, generator=generator).clamp_(1e-20, 1.0 - 1e-7)
            out[i] = logits + (-torch.log(-torch.log(uniform))).to(logits.device)
        return out


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """-inf outside the smallest set of tokens whose probabilities sum to at least `top_p`."""
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop = cumulative - sorted_logits.softmax(-1) >= top_p  # mass before this token already reaches p
    filtered = logits.clone()
    filtered[order[drop]] = float("-inf")
    return filtered


class _RowLimits(StoppingCriteria):
    """Ends each row at its own max_new_tokens or at its first stop string."""

    def __init__(self, prompt_width: int, max_new: list[int], stops: list[tuple[str, ...]], tokenizer):
        self.prompt_width, self.max_new, self.stops, self.tokenizer = prompt_width, max_new, stops, tokenizer
        self.lengths: list[int | None] = [None] * len(max_new)  # new tokens when a row was first done

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        n_new = input_ids.shape[1] - self.prompt_width
        done = [n_new >= limit for limit in self.max_new]
        for i, stops in enumerate(self.stops):
            if stops and not done[i]:
                text = self.tokenizer.decode(input_ids[i, self.prompt_width:], skip_special_tokens=True)
                done[i] = any(stop in text for stop in stops)
        for i, row_done in enumerate(done):
            if row_done and self.lengths[i] is None:
                self.lengths[i] = n_new
        return torch.tensor(done, device=input_ids.device)


def _row_seed(seed: int, k: int) -> int:
    """A 63-bit generator seed for sample k of a request seeded `seed` (any int, negative too)."""
    digest = hashlib.sha256(f"{seed}/{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _load(model: str, device: torch.device, dtype: torch.dtype):
    """(model, processor or tokenizer, with_vision); EngineUnavailable if it does not load."""
    try:
        config = AutoConfig.from_pretrained(model)
        with_vision = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        if with_vision:
            processor = AutoProcessor.from_pretrained(model)
            loaded = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype)
        else:
            processor = AutoTokenizer.from_pretrained(model)
            loaded = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
    except Exception as exc:
        raise EngineUnavailable(
            f"hf engine: cannot load model {model!r} ({type(exc).__name__}: {exc}). Pass a save_pretrained "
            "folder with config.json, weights and a processor or tokenizer (build the tiny policy with "
            "pipelines.policy.tiny_llava.build_tiny_llava), or a hub model already in the local cache "
            "(the hf engine never downloads)."
        ) from exc
    return loaded.to(device).eval(), processor, with_vision


def _split_images(messages: list[dict]) -> tuple[list[dict], list[str]]:
    """Messages with our image parts reduced to {"type": "image"}, and the image paths in order."""
    chat, paths = [], []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    paths.append(part["path"])
                    parts.append({"type": "image"})
                else:
                    parts.append(part)
            content = parts
        chat.append({**message, "content": content})
    return chat, paths


def _flat_text(content) -> str:
    return content if isinstance(content, str) else "".join(p["text"] for p in content if p.get("type") == "text")


def _open_image(path: str) -> Image.Image:
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    cuts = [text.find(stop) for stop in stops if stop and stop in text]
    return text[:min(cuts)] if cuts else text


def _as_set(ids) -> set[int]:
    if ids is None:
        return set()
    return {ids} if isinstance(ids, int) else set(ids)
