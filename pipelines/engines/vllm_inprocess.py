"""The `vllm` engine: vLLM in this process (`vllm.LLM`), for a GPU machine. Imported only when selected.

Offline batched `LLM.chat` over a whole batch of requests at once (vLLM schedules them together),
multimodal inputs as OpenAI-style `image_url` parts (the same conversion as the `openai` engine),
`n` completions per request (a GRPO group is one request), and structured outputs through
`StructuredOutputsParams(json=schema)` (vLLM >= 0.12; older versions named it `guided_json`).
vLLM is not installable next to Prefect on the CPU reference machine (its pins clash), so this
engine is exercised on GPU boxes; here its conversion code is tested and its absence is reported
clearly. Profile:

    engine: vllm
    model: Qwen/Qwen2.5-VL-7B-Instruct      # a hub name (downloaded once by vLLM) or a local folder
    options: {tensor_parallel_size: 1, gpu_memory_utilization: 0.85, max_model_len: 16384, dtype: bfloat16}
"""

import threading
import time

from pipelines.engines.base import Request, Response
from pipelines.engines.openai_compatible import chat_messages
from schemas.errors import EngineUnavailable


class VLLMEngine:
    name = "vllm"

    def __init__(self, model: str, *, revision: str | None = None, **llm_options):
        try:
            import vllm
        except ImportError:
            raise EngineUnavailable(
                "the `vllm` engine needs vLLM in this environment: on a CUDA machine `pip install 'thinkmill[vllm]'`. "
                "Without a GPU, serve the model with an OpenAI-compatible server and use an `openai` profile "
                "(configs/models/openai-local.yaml).") from None
        self.model, self.revision = model, revision or _revision(model)
        self._vllm = vllm
        self._llm = vllm.LLM(model=model, **({"revision": revision} if revision else {}), **llm_options)
        self._lock = threading.Lock()  # one batch at a time: vLLM schedules within it

    def generate(self, requests: list[Request]) -> list[Response]:
        started = time.perf_counter()
        conversations = [chat_messages(r.messages) for r in requests]
        try:
            params = [sampling_params(self._vllm, r) for r in requests]
            with self._lock:
                outputs = self._llm.chat(conversations, sampling_params=params, use_tqdm=False)
        except Exception as error:  # a failed batch is reported per request, never raised
            return [Response([], r.call_id(self.name, self.model, self.revision), error=f"vLLM failed: {error}",
                             transient=True) for r in requests]
        latency = (time.perf_counter() - started) / max(len(requests), 1)
        responses = []
        for request, output in zip(requests, outputs):
            texts = [c.text for c in output.outputs]
            usage = {"prompt_tokens": len(output.prompt_token_ids or []),
                     "completion_tokens": sum(len(c.token_ids) for c in output.outputs)}
            error = "empty completion" if any(not t.strip() for t in texts) else None
            responses.append(Response([] if error else texts, request.call_id(self.name, self.model, self.revision),
                                      error=error, usage=usage, latency_s=latency))
        return responses


def sampling_params(vllm, request: Request):
    """vLLM's SamplingParams for one request (structured outputs when it carries a schema)."""
    options = {"n": request.n, "temperature": request.temperature, "top_p": request.top_p, "max_tokens": request.max_tokens,
               "seed": request.seed, "stop": list(request.stop) or None}
    if request.response_schema is not None:
        from vllm.sampling_params import StructuredOutputsParams

        options["structured_outputs"] = StructuredOutputsParams(json=request.response_schema)
    return vllm.SamplingParams(**options)


def _revision(model: str) -> str:
    from pathlib import Path

    folder = Path(model)
    if folder.is_dir():
        from pipelines.policy.tiny_llava import weights_hash

        return weights_hash(folder)
    return "hub:" + model  # a hub name: pin `revision` in the profile for the call cache to notice updates
