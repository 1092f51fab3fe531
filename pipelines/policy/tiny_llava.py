"""The tiny local policy: a real LLaVA-family VLM built from a config, never downloaded.

`build_tokenizer` trains a ByteLevel BPE on a local corpus; `build_tiny_llava` puts a random-init
`LlavaForConditionalGeneration` (CLIP vision tower + Qwen2 text model) and a `LlavaProcessor` in a
`save_pretrained` folder that `AutoProcessor` and `AutoModelForImageTextToText` load offline, and
that TRL's GRPOTrainer trains. LLaVA rather than Qwen2-VL: in transformers 5 the Qwen-VL processors
need torchvision, which has no CPU build for torch 2.13; LLaVA's image processor has a PIL backend.

Every checkpoint folder (base, SFT, GRPO) is written by `save_policy`, which builds in a temporary
sibling folder and renames it into place, so a crash never leaves half a model. `weights_hash` over
the safetensors files is what a policy id is derived from.
"""

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPVisionConfig,
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from schemas.base import canonical_json, sha256_text

IMAGE_TOKEN = "<|image_pad|>"
END_OF_TURN = "<|im_end|>"
PAD = "<|endoftext|>"
SPECIAL_TOKENS = [PAD, "<|im_start|>", END_OF_TURN, "<|vision_start|>", "<|vision_end|>", IMAGE_TOKEN]
# Added as ordinary (non-special) tokens: each is one id, so the format is cheap to learn, and
# `decode(skip_special_tokens=True)` keeps them in the text that rewards parse.
REASONING_TAGS = ["<think>", "</think>", "<answer>", "</answer>"]

# Handles system/user/assistant turns whose content is a string or a list of
# {"type": "image"} / {"type": "text", "text": ...} parts (TRL's conversational prompts).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyLlavaConfig:
    """Sizes of the tiny policy. Defaults: about 1 M parameters, a 300-step SFT in about 10 s on 2 cores."""

    vocab_size: int = 1024            # BPE target; the model's vocabulary is len(tokenizer), which can be smaller
    text_hidden_size: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate_size: int = 512
    vision_hidden_size: int = 64
    vision_layers: int = 1
    vision_heads: int = 2
    image_size: int = 56              # pixels; (56 / 14)² = 16 image tokens per image
    patch_size: int = 14
    max_position_embeddings: int = 1024
    seed: int = 0

    def config_hash(self) -> str:
        """16 hex of sha256 over the fields: equal configs, equal hash."""
        return sha256_text(canonical_json(asdict(self)))[:16]


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A ByteLevel BPE trained on `corpus` (deterministic for the same corpus in the same order)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes, whatever the corpus
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    bpe.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in REASONING_TAGS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=END_OF_TURN, pad_token=PAD, bos_token=None, unk_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_llava(out_dir: Path, corpus: Iterable[str], config: TinyLlavaConfig = TinyLlavaConfig()) -> Path:
    """Train a tokenizer on `corpus`, random-init the model under `config.seed`, save both to `out_dir`."""
    tokenizer = build_tokenizer(corpus, config.vocab_size)
    tokenizer.model_max_length = config.max_position_embeddings
    torch.manual_seed(config.seed)
    model = LlavaForConditionalGeneration(_llava_config(config, tokenizer)).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, max_new_tokens=64,
    )
    save_policy(model, _processor(config, tokenizer), Path(out_dir))
    return Path(out_dir)


def _llava_config(config: TinyLlavaConfig, tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    # vocab = len(tokenizer): a larger vocabulary lets a random model sample ids that decode to nothing.
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=config.text_hidden_size, intermediate_size=config.text_intermediate_size,
        num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
        num_key_value_heads=config.text_kv_heads, max_position_embeddings=config.max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    vision = CLIPVisionConfig(
        hidden_size=config.vision_hidden_size, intermediate_size=4 * config.vision_hidden_size,
        num_hidden_layers=config.vision_layers, num_attention_heads=config.vision_heads,
        image_size=config.image_size, patch_size=config.patch_size, projection_dim=config.vision_hidden_size,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-1, vision_feature_select_strategy="default",  # "default" drops the CLS token
        projector_hidden_act="gelu", tie_word_embeddings=True,
    )


def _processor(config: TinyLlavaConfig, tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    side = config.image_size
    # Squash to a square rather than LLaVA's resize-shortest-edge-then-centre-crop, which would cut
    # the sides off a wide chart: a reasoning question may be about anything in the image.
    image_processor = LlavaImageProcessorPil(
        size={"height": side, "width": side}, crop_size={"height": side, "width": side},
        do_center_crop=False, do_pad=False,
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=config.patch_size,
        vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token, which "default" then drops again
        chat_template=CHAT_TEMPLATE,
    )


def save_policy(model, processor, out_dir: Path) -> Path:
    """Save model + processor to `out_dir` atomically (replacing what was there)."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    return write_dir_atomically(Path(out_dir), write)


def write_dir_atomically(out_dir: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp)` on a temporary sibling of `out_dir`, then rename it into place.

    A rename within one filesystem is atomic, so readers see the old folder or the new one, never a
    half-written one. An existing `out_dir` is moved aside first and deleted after the swap.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint folder is ordinary data
    try:
        write(tmp)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, old / "dir")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def weights_hash(model_dir: Path) -> str:
    """sha256 (hex) over the weight files of `model_dir` (*.safetensors, else *.bin), in name order.

    Only the weights: a policy id must change when and only when the parameters do.
    """
    files = sorted(Path(model_dir).glob("*.safetensors")) or sorted(Path(model_dir).glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors or *.bin weights in {model_dir}; is it a save_pretrained folder?")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
