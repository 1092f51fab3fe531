"""The media store: image bytes kept once per content, under the dataset root, named by sha256.

A file lives at `<root>/media/<sha[:2]>/<sha><suffix>`, and rows refer to it by the `media_uri`
relative to the dataset root ("media/ab/ab12….png"), so a dataset folder can move as a whole.
Writes are atomic (a temporary file in the same folder, then `os.replace`) and idempotent (bytes
already stored are not written again), so concurrent workers storing the same image are safe.

`open_image` is the one way every stage sees an image: EXIF orientation applied, then RGB.
"""

import hashlib
import os
import uuid
from pathlib import Path

from PIL import Image, ImageOps


class MediaStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def put(self, data: bytes, suffix: str) -> tuple[str, str]:
        """Store `data` (once); return `(media_uri, sha256)`. `suffix` includes the dot: ".png"."""
        sha256 = hashlib.sha256(data).hexdigest()
        media_uri = f"media/{sha256[:2]}/{sha256}{suffix}"
        final = self.root / media_uri
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            # A unique name per writer; opened with mode 0o666 so the umask applies, as for any file.
            tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return media_uri, sha256

    def path(self, media_uri: str) -> Path:
        return self.root / media_uri


def open_image(path) -> Image.Image:
    """The image as every stage sees it: fully decoded, EXIF orientation applied, mode RGB."""
    with Image.open(path) as image:
        return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Decode `image`, apply its EXIF orientation (in place) and return it in mode RGB.

    Returns `image` itself when it already is RGB (no copy). Raises ValueError for modes Pillow cannot
    convert to RGB (e.g. a TIFF with premultiplied grey + alpha, mode "La").
    """
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    return image if image.mode == "RGB" else image.convert("RGB")
