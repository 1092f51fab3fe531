"""Source `synthetic`: rendered scenes of the synthetic world, each with its scene graph, for `ingest`.

Scene `i` belongs to family `families[i % len(families)]` and has seed
`split_seed(split) + seed + i // len(families)`, so `scenes=200` over four families gives
counting-000000 … counting-000049, relations-000000 …, and so on. The `train` split (the policy's
cold-start SFT data) starts its seeds at 1,000,000: its scenes never repeat those of the default
split as long as a default dataset uses seeds below that.

Raw data has duplicates, and `dedup` must catch them: `planted_duplicates` gives that fraction of
the scenes one near-copy with the *same* scene JSON, cycling through a JPEG re-encode (quality 80),
a resize to 80 % and a 1 % crop off each border. Copies follow the originals, with source_ref
"<scene_id>#jpeg", "#resized" or "#cropped". Everything is deterministic: same parameters, same
bytes. The fingerprint hashes (renderer version, scene JSON, copy kind) without rendering, so
building cache keys stays cheap; bump `RENDERER_VERSION` whenever `pipelines/world/render.py`
changes pixels.

Clips. A family of `CLIP_FAMILIES` (clip_objects, clip_motion, clip_counter) yields short videos
instead of images: its "scene" is a clip (`pipelines/world/clips.py`: a scene graph over time, 3 s
at 8 fps), the content MP4 / H.264 bytes, the `scene` column the clip's JSON. They mix with image
families in the same round robin (`families: [counting, clip_motion]` alternates an image and a
clip). A planted copy of a clip is the same frames re-encoded at a lower quality (CRF 35,
"<clip_id>#reencoded"). A clip's fingerprint also names the encoder build (`video.ENCODER`): another
PyAV / x264 may encode the same frames to other bytes. The defaults yield no clips.
"""

import hashlib
import random
from io import BytesIO

from PIL import Image

from pipelines import video
from pipelines.world.clips import CLIP_FAMILIES, Clip, clip_to_json, make_clip, render_clip
from pipelines.world.render import render
from pipelines.world.scenes import DEFAULT_SIZE, FAMILIES, MIN_SIZE, make_scene, scene_to_json
from schemas.errors import RecipeError, did_you_mean

RENDERER_VERSION = 1
SPLIT_SEED_OFFSETS = {"default": 0, "train": 1_000_000}
COPY_KINDS = ("jpeg", "resized", "cropped")
JPEG_QUALITY = 80
RESIZE_FACTOR = 0.8
CROP_FRACTION = 0.01  # off each border: "slightly" (dedup finds symmetric crops up to 5 %; see the dedup stage)
REENCODE_CRF = 35  # a planted clip copy: visibly blockier than the original's CRF 23, same content
ALL_FAMILIES = FAMILIES + CLIP_FAMILIES


def split_seed(split: str) -> int:
    """The first scene seed of `split`: 0 for "default", 1,000,000 for "train"."""
    if split not in SPLIT_SEED_OFFSETS:
        known = ", ".join(SPLIT_SEED_OFFSETS)
        raise RecipeError("source synthetic",
                          [f"unknown split {split!r}; splits are: {known}.{did_you_mean(split, SPLIT_SEED_OFFSETS)}"])
    return SPLIT_SEED_OFFSETS[split]


def synthetic_items(*, families: list[str] = list(FAMILIES), scenes: int = 200, seed: int = 0,
                    size: int = DEFAULT_SIZE, planted_duplicates: float = 0.0, split: str = "default") -> list[dict]:
    """`scenes`: how many, round-robin over `families` (image or clip families); `size`: pixels per side;
    `planted_duplicates`: share of scenes (0–1) that also get one near-copy; `split`: "default" or "train"
    (disjoint seeds)."""
    _check(families, scenes, size, planted_duplicates, split)
    first_seed = split_seed(split) + seed
    originals = [_make(families[index % len(families)], first_seed + index // len(families), size)
                 for index in range(scenes)]
    n_copies = round(planted_duplicates * scenes)
    copied = sorted(random.Random(f"thinkmill.synthetic/planted/{split}/{seed}").sample(range(scenes), n_copies))

    items, images = [], {}
    for index, scene in enumerate(originals):
        if isinstance(scene, Clip):
            items.append(_item(scene.clip_id, clip_to_json(scene), "original", render_clip(scene)))
            continue
        image = render(scene)
        if index in copied:
            images[index] = image  # keep only the ones a copy is made from
        items.append(_item(scene.scene_id, scene_to_json(scene), "original", _png(image)))
    image_copies = 0
    for index in copied:
        scene = originals[index]
        if isinstance(scene, Clip):
            items.append(_item(f"{scene.clip_id}#reencoded", clip_to_json(scene), "reencoded",
                               render_clip(scene, crf=REENCODE_CRF)))
            continue
        kind = COPY_KINDS[image_copies % len(COPY_KINDS)]
        image_copies += 1
        items.append(_item(f"{scene.scene_id}#{kind}", scene_to_json(scene), kind, _near_copy(images[index], kind)))
    return items


def _make(family: str, seed: int, size: int):
    return make_clip(family, seed, size=size) if family in CLIP_FAMILIES else make_scene(family, seed, size=size)


def fingerprint(scene_json: str, copy_kind: str) -> str:
    renderer = f"renderer-{RENDERER_VERSION}" + (f"/{video.ENCODER}" if '"keyframes":' in scene_json else "")
    return hashlib.sha256(f"synthetic/{renderer}/{copy_kind}\n{scene_json}".encode()).hexdigest()


def _item(source_ref: str, scene_json: str, copy_kind: str, content: bytes) -> dict:
    return {"source": "synthetic", "source_ref": source_ref, "path": None, "content": content,
            "scene": scene_json, "fingerprint": fingerprint(scene_json, copy_kind)}


def _near_copy(image: Image.Image, kind: str) -> bytes:
    if kind == "jpeg":
        buffer = BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()
    width, height = image.size
    if kind == "resized":
        return _png(image.resize((round(width * RESIZE_FACTOR), round(height * RESIZE_FACTOR)), Image.BILINEAR))
    dx, dy = round(width * CROP_FRACTION), round(height * CROP_FRACTION)
    return _png(image.crop((dx, dy, width - dx, height - dy)))


def _png(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _check(families: list[str], scenes: int, size: int, planted_duplicates: float, split: str) -> None:
    """Gather every problem with the parameters into one RecipeError."""
    problems = []
    if isinstance(families, str) or not families:
        problems.append(f"families must be a non-empty list, got {families!r}; families are: {', '.join(ALL_FAMILIES)}")
    else:
        for family in families:
            if family not in ALL_FAMILIES:
                problems.append(f"unknown family {family!r}; families are: {', '.join(ALL_FAMILIES)}."
                                f"{did_you_mean(family, ALL_FAMILIES)}")
    if not isinstance(scenes, int) or scenes < 0:
        problems.append(f"scenes must be a whole number ≥ 0, got {scenes!r}")
    if not isinstance(size, int) or size < MIN_SIZE:
        problems.append(f"size must be a whole number of pixels ≥ {MIN_SIZE}, got {size!r}")
    if not isinstance(planted_duplicates, (int, float)) or not 0 <= planted_duplicates <= 1:
        problems.append(f"planted_duplicates is a share of the scenes, between 0 and 1; got {planted_duplicates!r}")
    if split not in SPLIT_SEED_OFFSETS:
        problems.append(f"unknown split {split!r}; splits are: {', '.join(SPLIT_SEED_OFFSETS)}."
                        f"{did_you_mean(split, SPLIT_SEED_OFFSETS)}")
    if problems:
        raise RecipeError("source synthetic", problems)
