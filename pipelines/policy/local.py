"""Models thinkmill builds on this machine instead of downloading: `local:<name>` in a model profile.

`tiny-llava` is the embedded default policy: a LLaVA-family VLM of a few million parameters, with a
tokenizer trained on the synthetic world's text, cold-started by a short SFT on the world's *train*
split (seeds disjoint from any dataset's) so that it answers in `<think>…</think><answer>…</answer>`
and sometimes correctly: GRPO needs groups whose rewards differ. It is built once per machine under
`$THINKMILL_HOME/models/`, in a folder named by the hash of everything that shapes it, so a change
to the recipe of the model builds a new one, and the same recipe rebuilds it bit for bit.
"""

import fcntl
import json
import os
import random
from pathlib import Path

from schemas.base import canonical_json, sha256_text
from schemas.errors import EngineUnavailable

TINY_LLAVA_RECIPE = {"scenes": 480, "sft_steps": 300, "sft_batch_size": 8, "sft_learning_rate": 1e-3, "seed": 0, "version": 1}


def ensure_local_model(name: str, home: Path) -> Path:
    """The folder of local model `name`, built first if absent. `$THINKMILL_MODELS` overrides `<home>/models`."""
    builders = {"tiny-llava": _build_tiny_llava}
    if name not in builders:
        raise EngineUnavailable(f"no local model {name!r}; local models: {', '.join(builders)}")
    return builders[name](Path(os.environ.get("THINKMILL_MODELS") or Path(home) / "models"))


def _build_tiny_llava(models_dir: Path) -> Path:
    from pipelines.policy.tiny_llava import TinyLlavaConfig
    from pipelines.sources.synthetic import RENDERER_VERSION

    config = TinyLlavaConfig()
    fingerprint = sha256_text(canonical_json([TINY_LLAVA_RECIPE, config.config_hash(), RENDERER_VERSION]))[:12]
    target = models_dir / f"tiny-llava-{fingerprint}"
    if (target / "thinkmill-model.json").exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / f".tiny-llava-{fingerprint}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per machine; the others wait and reuse its result
        if (target / "thinkmill-model.json").exists():
            return target
        return _build(target, config)


def _build(target: Path, config) -> Path:
    import shutil

    from pipelines.policy.sft import SFTExample, sft
    from pipelines.policy.tiny_llava import build_tiny_llava

    examples, corpus = sft_data(TINY_LLAVA_RECIPE["scenes"], TINY_LLAVA_RECIPE["seed"])
    scratch = target.parent / f".{target.name}.building"
    shutil.rmtree(scratch, ignore_errors=True)
    base = build_tiny_llava(scratch / "base", corpus, config)
    metrics = sft(base, [SFTExample(**e) for e in examples], scratch / "sft", steps=TINY_LLAVA_RECIPE["sft_steps"],
                  batch_size=TINY_LLAVA_RECIPE["sft_batch_size"], learning_rate=TINY_LLAVA_RECIPE["sft_learning_rate"],
                  seed=TINY_LLAVA_RECIPE["seed"])
    (scratch / "sft" / "thinkmill-model.json").write_text(json.dumps(
        {"name": "tiny-llava", "recipe": TINY_LLAVA_RECIPE, "sft": metrics, "n_examples": len(examples)}, indent=2, default=str))
    (scratch / "sft").rename(target)
    shutil.rmtree(scratch, ignore_errors=True)
    return target


def sft_data(n_scenes: int, seed: int) -> tuple[list[dict], list[str]]:
    """Cold-start examples (image, question, short think + answer) and the tokenizer corpus, from the train split."""
    from pipelines.policy.prompt import SYSTEM_PROMPT, question_text
    from pipelines.sources.synthetic import split_seed
    from pipelines.world import knowledge
    from pipelines.world.render import render
    from pipelines.world.scenes import FAMILIES, make_scene

    rng = random.Random(seed)
    examples, corpus = [], [SYSTEM_PROMPT]
    for index in range(n_scenes):
        scene = make_scene(FAMILIES[index % len(FAMILIES)], split_seed("train") + seed * 100_000 + index)
        image = render(scene)
        corpus += [knowledge.caption_coarse(scene), knowledge.caption_fine(scene)]
        for item in knowledge.qa_items(scene):
            prompt = question_text(item.question, item.answer_type, item.choices)
            think = " ".join(item.steps[0].split()[:12])
            target = f"<think>{think}</think><answer>{item.answer}</answer>"
            corpus += [prompt, target, " ".join(item.steps)]
            if item.answer_type != "des" and rng.random() < 0.5:  # short answers: the rollouts' max_tokens is small
                examples.append({"image": image, "prompt": prompt, "target": target, "system": SYSTEM_PROMPT})
    return examples, corpus
