"""Source `image_folder`: every regular file under a folder, for `ingest` to read from disk.

Files are not filtered by extension: a file that is not an image becomes an `ingest.not_an_image`
reject, so nothing in the folder disappears without a trace. Hidden files and folders (a name that
starts with ".") are skipped, as are other non-regular entries (sockets, broken links).
The fingerprint is "<relpath>:<size>:<mtime_ns>": a stat, not a read, so listing a large folder to
build cache keys stays cheap; touching or rewriting a file changes it.
"""

import os
from pathlib import Path

from schemas.errors import RecipeError


def image_folder_items(*, path: str, recursive: bool = True) -> list[dict]:
    """`path`: the folder; `recursive`: also walk its subfolders."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise RecipeError("source image_folder", [f"path {str(path)!r} {what} (resolved: {folder.resolve()})"])
    folder = folder.resolve()
    items = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")] if recursive else []
        for name in files:
            file = Path(directory, name)
            if name.startswith(".") or not file.is_file():
                continue
            stat = file.stat()
            relpath = file.relative_to(folder).as_posix()
            items.append({"source": "image_folder", "source_ref": relpath, "path": str(file), "content": None,
                          "scene": None, "fingerprint": f"{relpath}:{stat.st_size}:{stat.st_mtime_ns}"})
    return sorted(items, key=lambda item: item["source_ref"])
