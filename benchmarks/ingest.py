"""Images/s of the `ingest` stage vs a bare loop of Pillow decode + imagehash on the same files.

The bare loop is the floor: open, decode to RGB, pHash, dHash. Ingest adds reading the bytes,
sha256, EXIF orientation, the media-store write and building the Arrow rows. Target: ≤ 1.2×.
Files: photo-like JPEGs (gradients + blotches + grain, 1–2 MP) and small PNGs, written to a
temporary folder; each timing is the best of two runs, and each ingest run gets an empty store.

    python benchmarks/ingest.py [--jpegs 240] [--pngs 120]
"""

import argparse
import tempfile
import time
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from pipelines.sources import source_items
from pipelines.stage import StageContext
from pipelines.stages.ingest import ingest

JPEG_SIZES = [(1600, 1000), (1280, 960), (1920, 1080), (1024, 1024)]  # 1.0–2.1 MP


def photo_like(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth gradients, soft blotches and sensor-like grain: compresses like a photo, not like noise."""
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    base = rng.uniform(40, 200, 3).astype(np.float32) + x * rng.uniform(-60, 60, 3).astype(np.float32) \
        + y * rng.uniform(-60, 60, 3).astype(np.float32)
    image = base + 0.3 * blotches(rng, width, height, 200) + 0.15 * blotches(rng, width, height, 24)
    grain = rng.integers(-8, 9, (height, width, 3), dtype=np.int8)
    return (image + grain).clip(0, 255).astype(np.uint8)


def blotches(rng: np.random.Generator, width: int, height: int, scale: int) -> np.ndarray:
    """Random colour cells `scale` pixels wide, smoothly interpolated; values in -128..127."""
    cells = rng.integers(0, 255, (height // scale + 2, width // scale + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(cells).resize((width, height), Image.BICUBIC), dtype=np.float32) - 128


def make_files(folder: Path, n_jpegs: int, n_pngs: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n_jpegs):
        width, height = JPEG_SIZES[i % len(JPEG_SIZES)]
        file = folder / f"photo-{i:04d}.jpg"
        Image.fromarray(photo_like(rng, width, height)).save(file, quality=90)
        files.append(file)
    for i in range(n_pngs):
        file = folder / f"small-{i:04d}.png"
        Image.fromarray(photo_like(rng, 256, 192)).save(file)
        files.append(file)
    return files


def bare_loop(files: list[Path]) -> None:
    for file in files:
        with Image.open(file) as image:
            rgb = image.convert("RGB")
        imagehash.phash(rgb), imagehash.dhash(rgb)


def run_ingest(folder: Path, scratch: Path, run: int) -> None:
    items = source_items({"image_folder": {"path": str(folder)}})
    ctx = StageContext(run_id=f"bench-{run}", stage="ingest", stage_version=1, config_hash="bench",
                       root=scratch / f"dataset-{run}")
    result = ingest(items, ctx)
    assert result.out.num_rows == items.num_rows, result.rejects.to_pylist()[:3]


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jpegs", type=int, default=240)
    parser.add_argument("--pngs", type=int, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="thinkmill-bench-ingest-") as tmp:
        folder, scratch = Path(tmp, "images"), Path(tmp, "scratch")
        folder.mkdir()
        files = make_files(folder, args.jpegs, args.pngs)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        print(f"{len(files)} files ({args.jpegs} JPEG of 1–2 MP, {args.pngs} PNG of 256x192), {megabytes:.0f} MB")
        bare, staged = [], []
        for run in range(2):  # interleaved, so both see the same page cache and CPU state
            bare.append(timed(bare_loop, files))
            staged.append(timed(run_ingest, folder, scratch, run))
        bare_s, ingest_s = min(bare), min(staged)
        bare_rate, ingest_rate = len(files) / bare_s, len(files) / ingest_s
        print(f"bare loop (open, RGB, pHash, dHash): {bare_s:.2f} s, {bare_rate:.1f} img/s")
        print(f"ingest stage (incl. source listing):  {ingest_s:.2f} s, {ingest_rate:.1f} img/s")
        print(f"ingest: {ingest_rate:.1f} img/s vs bare {bare_rate:.1f} img/s = overhead {ingest_s / bare_s:.2f}×")


if __name__ == "__main__":
    main()
