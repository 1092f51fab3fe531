"""Real image files for tests: photos, and the broken files ingest must quarantine."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo(width: int = 120, height: int = 80, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    return Image.fromarray((gradient * 0.7 + rng.integers(0, 60, (height, width, 3))).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with a few bytes of pixel data: cheap to build, a bomb to decode."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def grey_premultiplied_alpha_tiff() -> bytes:
    """A TIFF of grey + associated (premultiplied) alpha: Pillow decodes it as mode "La", which has no RGB conversion."""
    data = encode(Image.new("LA", (8, 8), (100, 200)), "TIFF")
    unassociated = struct.pack("<HHII", 338, 3, 1, 2)  # ExtraSamples = 2 (unassociated alpha), as Pillow writes LA
    assert data.count(unassociated) == 1
    return data.replace(unassociated, struct.pack("<HHII", 338, 3, 1, 1))


def rotated_jpeg(width: int = 40, height: int = 20) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    return encode(photo(width, height), "JPEG", exif=exif)



def write_bad_media(folder: Path) -> dict[str, str]:
    """Write one file per bad-media case (plus two good photos); return file name -> expected reject reason."""
    folder.mkdir(parents=True, exist_ok=True)
    png = encode(photo(300, 200), "PNG")
    jpeg = encode(photo(300, 200, seed=1), "JPEG", quality=90)
    files = {"good-photo.png": png, "good-photo.jpg": jpeg, "empty.png": b"", "cut.png": png[: len(png) // 2],
             "cut.jpg": jpeg[: len(jpeg) // 2], "notes.txt": b"not an image\n", "huge.png": png_header_only(20_000, 20_000),
             "premultiplied.tiff": grey_premultiplied_alpha_tiff()}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {"empty.png": "ingest.empty_file", "cut.png": "ingest.truncated", "cut.jpg": "ingest.truncated",
            "notes.txt": "ingest.not_an_image", "huge.png": "ingest.too_many_pixels",
            "premultiplied.tiff": "ingest.unreadable_mode"}
