"""Test helpers for the tiny policy: counting scenes with exact answers, and a format check.

A scene is a white 112 px square with `a` circles of one colour and `b` of another; the SFT target
states both counts in `<think>` and the sum in `<answer>`, so a reward can check format and answer.
"""

import random
import re

import torch
from PIL import Image, ImageDraw

from pipelines.policy.sft import SFTExample

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}
QUESTION = "How many circles are there?"
FORMAT = re.compile(r"^<think>.+?</think><answer>(.+?)</answer>$", re.S)


def scene(counts: dict[str, int], rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (112, 112), "white")
    draw = ImageDraw.Draw(image)
    for color, count in counts.items():
        for _ in range(count):
            x, y = rng.randint(8, 104), rng.randint(8, 104)
            draw.ellipse([x - 7, y - 7, x + 7, y + 7], fill=COLORS[color])
    return image


def counting_examples(n: int, seed: int = 0) -> list[SFTExample]:
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        (first, second), a, b = rng.sample(sorted(COLORS), 2), rng.randint(0, 4), rng.randint(0, 4)
        target = f"<think>There are {a} {first} circles and {b} {second} ones.</think><answer>{a + b}</answer>"
        examples.append(SFTExample(scene({first: a, second: b}, rng), QUESTION, target))
    return examples


def corpus(examples: list[SFTExample]) -> list[str]:
    return [f"{e.prompt} {e.target}" for e in examples]


def answer_of(example: SFTExample) -> str:
    return FORMAT.match(example.target).group(1)


def formatted(text: str) -> bool:
    return FORMAT.match(text.strip()) is not None


def one_thread():
    """Run torch on one thread for the duration of a test module, then restore.

    On a 2-core machine shared with other work, torch's default of one thread per core makes these
    tiny models 10-40x slower (threads wait on each other); one thread is never slower here.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
