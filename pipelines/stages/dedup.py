"""Dedup: link exact (sha256) and perceptual (pHash) duplicates to one canonical asset.

Counts per asset: every asset of this run comes out unchanged, except that a duplicate gets
`duplicate_of` (its canonical asset) and `duplicate_distance` (pHash Hamming distance to it, 0 for
the same bytes) and a reject, `dedup.exact_duplicate` or `dedup.near_duplicate` (its detail names
the distance and, for a crop match, which asset was cropped and by how much), so it is excluded
downstream but never deleted. Assets already in the lake are never re-linked; they win over new ones.
Ids are content-addressed, so a new row with a lake asset's id is that asset again: it keeps the
lake's link (none, or its canonical), never a link to itself.

Candidates, then confirmation. Ingest stores, besides each image's pHash, the pHashes of its central
region cut by 1-5 % per border (`phash_crops`, schemas.assets.PHASH_CROP_LEVELS), 256-bit pHashes of
the whole image and of those crops (`phash_256`) and a colour histogram. Two assets are *candidates*
when the pHash of one is within `phash_max_distance` of the pHash or a crop pHash of the other (a
cropped copy's pHash lands near its original's crop hash of the same level); their distance is the
least such one (`nearest_view`). A candidate pair is *confirmed* when the colour histograms are within
`colour_max_distance` (L1) and the 256-bit pHashes within `phash_256_max_distance` bits, at their
closest view (`confirmation`). A row written before ingest computed these (null columns) brings its
pHash only: no crop entries, and no check it could fail.

Kinds. Images are compared with images and videos with videos, never across: a video's signature
is that of its middle frame (ingest), and a still of a video is not that video. Measured on 300
synthetic clips (100 per clip family) at 96, 160 and 224 px, each with 90 planted re-encodes at CRF 35:
every copy linked to its original, no two different clips linked. Video frames are not compared at all: frames of one video often look alike (a still
shot, a slow pan), and linking them would drop a video's own frames as duplicates of each other. They
are not items of this stage (pipelines/stage.py): they come out unchanged, with no link and no
reject, and stay live as long as their video. A video found to duplicate another is rejected like
an image, and its frames leave the run with it.

Phases: `parse_hashes` / `parse_crops` (hex → uint64), `exact_groups` (same sha256), `index_entries`
(every pHash and crop pHash, with its row), `near_pairs` (the index: every pair of entries within
`max_distance` bits, found by multi-index hashing, never a pairwise loop) and `link` (keep the pairs
with a row's own pHash on one side and two rows, then pick canonicals). Linking is greedy in priority
order (lake first, then input order): an asset with the same bytes as an earlier one joins that one's
canonical; otherwise it joins the nearest canonical, among the groups of its earlier candidates, that
is at most 2× the threshold away and confirms with it; otherwise it is a canonical itself. The 2× cap
stops chains of small edits (frames of a pan, a scene redrawn step by step) from merging distant
images, while a copy of a copy still finds its original. So no kept asset of this run forms a
confirmed candidate pair with another kept asset (lake canonicals included), and every duplicate is
a candidate of an asset of its group and within 2× of its canonical, and confirmed with it.

Measured on 1,000 synthetic-world scenes (250 per family, seeds 0-249) and copies of each:
- pHash alone at 4 bits: JPEG q80, 80 % resize and both: 100 %. Crops per border: 1 % 98.0 %,
  1.5 % 88.8 %, 2 % 73.0 %, 2.5 % 37.6 %, 3 % 23.8 %, 4 % 9.0 %, 5 % 3.3 %.
- Crop levels (pHash of the copy against the original's crops, either way): {2, 4, 6} % leaves
  99.2-100 %; {1.5, 3, 4.5} % is 100 % up to 3 % and 99.5 % at 5 %; {1.5, 3, 4, 5} % is the smallest
  set found with 100 % at every symmetric crop 0-5 % (in 0.5 % steps). We keep {1, 2, 3, 4, 5} %:
  also 100 %, with every copy within 4 bits (1 % crops within 2), and a 1 % crop found at its level
  (these level sets measured with full-resolution crops; ingest's faster ones, end to end, below).
- Central crops do not model a shift: one-sided crops are found by the index at left 2 % 96.7 %,
  left+top 2 % 88.7 %, left+top 3 % 48.8 %, and after confirmation (end to end, below) less.
- False candidates: 8 pairs of original scenes within 4 bits by pHash, 16 with crop hashes, and
  111 pairs of scenes among the 25,000 assets below, all bar charts with similar bar proportions.
- imagehash.colorhash cannot confirm them: JPEG moves it by up to 7 of 42 bits (resize + JPEG up to
  8), while 96 of 501 false candidate pairs (same bar colour) are 0 bits apart. Hence our own histogram:
  chroma per hue, soft-binned, from a 32×32 box average that smooths JPEG's colour fringes away.
- Confirmation margins, over all candidate pairs: the same image (original/copy, symmetric kinds)
  is within 0.053 in colour (copy/copy 0.061) and 18 bits of 256 (copy/copy 20); different scenes
  that pass the 256-bit check are ≥ 0.219 apart in colour, and those that pass the colour check are
  ≥ 36 bits apart. Defaults sit between: colour 0.1, 256-bit 28.
- End to end (ingest's signature, this stage, defaults): 1000/1000 found for JPEG, resize, resize +
  JPEG, every symmetric crop 0.5-5 %, 2 % crop + JPEG, 3 % crop + resize; one-sided crops: left 1 %
  100 %, left+top 1 % 99.4 %, left 2 % 94.7 %, left+top 2 % 61.4 %, left 3 % 28.5 %, left+top 3 % 0.9 %.
  No link across scenes, per kind and in one run of all 25,000 assets. 1-2 MP photo-like images
  (the reduced path of ingest): JPEG, resize and crops of 1-5 %, 40/40 each.
- Cost: six index entries per asset. `link` over 1M random hashes with drifting crop hashes takes
  ~23 s on 2 cores (1.6 s with pHashes only), nearly all in `near_pairs` over 6M entries.

Why 4 bits: pHash moves 0-2 of 64 bits under resizing to 80 % or JPEG at quality 80 (0-4 for both),
while unrelated images sit near 32 bits apart. Raise it with care: the confirmation margins above
were measured at 4, and links may span 2× the threshold.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from pipelines.hamming_index import near_pairs, plan_chunks  # noqa: F401  (plan_chunks: re-exported for tests)
from pipelines.stage import StageContext, StageResult, stage
from schemas.assets import PHASH_CROP_LEVELS

SIGNATURE = ["phash", "phash_crops", "phash_256", "colour_histogram"]  # written by ingest; null in older rows


@stage(reads={"assets": ["asset_id", "kind", "sha256", *SIGNATURE],
              "lake.assets": ["asset_id", "kind", "sha256", *SIGNATURE, "duplicate_of"]},
       writes="assets", version=2, unit="asset", sharded=False)  # one index must see every asset at once
def dedup(assets: pa.Table, lake_assets: pa.Table, ctx: StageContext, *, phash_max_distance: int = 4,
          phash_256_max_distance: int = 28, colour_max_distance: float = 0.1) -> StageResult:
    """`phash_max_distance`: largest pHash Hamming distance (of 64 bits) that makes two assets candidates;
    `phash_256_max_distance` (of 256 bits) and `colour_max_distance` (L1 between colour histograms):
    largest differences at which a candidate pair is confirmed as one image."""
    duplicate_of, duplicate_distance, rejects = [None] * assets.num_rows, [None] * assets.num_rows, []
    kinds, lake_kinds = assets["kind"].to_pylist(), lake_assets["kind"].to_pylist()
    for kind in ("image", "video"):  # each compared with its own kind only; frames never (see the module doc)
        rows = [k for k, v in enumerate(kinds) if _kind_group(v) == kind]
        lake_rows = [k for k, v in enumerate(lake_kinds) if _kind_group(v) == kind]
        if not rows:
            continue
        links = link_assets(assets.take(pa.array(rows, pa.int64())), lake_assets.take(pa.array(lake_rows, pa.int64())), ctx,
                            phash_max_distance=phash_max_distance, phash_256_max_distance=phash_256_max_distance,
                            colour_max_distance=colour_max_distance)
        for row, (canonical, distance, reject) in zip(rows, links):
            if reject is not None:
                duplicate_of[row], duplicate_distance[row] = canonical, distance
                rejects.append(reject)
    out = assets.set_column(assets.schema.get_field_index("duplicate_of"), "duplicate_of",
                            pa.array(duplicate_of, pa.string()))
    out = out.set_column(out.schema.get_field_index("duplicate_distance"), "duplicate_distance",
                         pa.array(duplicate_distance, pa.int64()))
    return StageResult(out=out, rejects=ctx.rejects(rejects))


def _kind_group(kind: str | None) -> str | None:
    """Which assets are compared together: "image" (also rows without a kind), "video", or None for frames."""
    return None if kind == "frame" else "video" if kind == "video" else "image"


def link_assets(assets: pa.Table, lake_assets: pa.Table, ctx: StageContext, *, phash_max_distance: int,
                phash_256_max_distance: int, colour_max_distance: float) -> list[tuple[str | None, int | None, dict | None]]:
    """Per new asset: (its canonical's id, the distance to it, the reject row), or (None, None, None) if it is one."""
    n_lake = lake_assets.num_rows
    ids = lake_assets["asset_id"].to_pylist() + assets["asset_id"].to_pylist()
    sha256 = lake_assets["sha256"].to_pylist() + assets["sha256"].to_pylist()
    hashes = parse_hashes(lake_assets["phash"].to_pylist() + assets["phash"].to_pylist())
    crops = parse_crops(lake_assets["phash_crops"].to_pylist() + assets["phash_crops"].to_pylist())
    confirm = confirmation(lambda k: row_value(lake_assets, assets, "phash_256", k),
                           lambda k: row_value(lake_assets, assets, "colour_histogram", k),
                           phash_256_max_distance, colour_max_distance)
    fixed = np.full(len(ids), -1)
    fixed[:n_lake] = lake_canonicals(ids[:n_lake], lake_assets["duplicate_of"].to_pylist())
    canonical = link(hashes, exact_groups(sha256), fixed, phash_max_distance, crops=crops, confirm=confirm)

    links = []
    for k, c in zip(range(n_lake, len(ids)), canonical[n_lake:].tolist()):
        if ids[c] == ids[k]:  # a canonical, or (ids being content-addressed) a lake canonical again
            links.append((None, None, None))
            continue
        if sha256[c] == sha256[k]:
            distance = (int(hashes[k]) ^ int(hashes[c])).bit_count()
            reject = ctx.reject(ids[k], "dedup.exact_duplicate", detail=f"same bytes as {ids[c]}")
        else:
            distance, cropped, level = nearest_view(hashes, crops, k, c)
            detail = f"pHash distance {distance} to {ids[c]}"
            if cropped is not None:  # which one was cut, and by how much: "… cropped by 2 % per border"
                cut = f"cropped by {round(level * 100)} % per border"
                detail += f" {cut}" if cropped == c else f", with this asset {cut}"
            reject = ctx.reject(ids[k], "dedup.near_duplicate", detail=detail)
        links.append((ids[c], distance, reject))
    return links


def row_value(lake_assets: pa.Table, assets: pa.Table, name: str, k: int):
    """Row k of lake rows then new rows, read one value at a time: only candidate pairs need these."""
    n_lake = lake_assets.num_rows
    return (lake_assets[name][k] if k < n_lake else assets[name][k - n_lake]).as_py()


def parse_hashes(hex_digits: list[str]) -> np.ndarray:
    """64-bit hashes written as 16 hex digits (imagehash's `str()`) → uint64 array."""
    bad = [h for h in hex_digits if not isinstance(h, str) or len(h) != 16]
    if bad:
        raise ValueError(f"{len(bad)} pHash values are not 16 hex digits, e.g. {bad[:3]}")
    return np.frombuffer(bytes.fromhex("".join(hex_digits)), dtype=">u8").astype(np.uint64)


def exact_groups(sha256: list[str]) -> np.ndarray:
    """For each row, the position of the first row with the same sha256 (itself if it is the first)."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(s, k) for k, s in enumerate(sha256)], dtype=np.int64)


class CropHashes(NamedTuple):
    """The crop pHashes of every row: `hashes[k, i]` is row k's hash at PHASH_CROP_LEVELS[i], valid where `present[k]`."""

    hashes: np.ndarray  # (rows, levels) uint64
    present: np.ndarray  # (rows,) bool: False for rows without crop hashes (written before ingest made them)


def parse_crops(crop_hashes: list[list[str] | None]) -> CropHashes:
    """`phash_crops` values (lists of 16 hex digits, or None) → CropHashes. A list of another length than
    PHASH_CROP_LEVELS was made with other levels: that row counts as having none."""
    n_levels = len(PHASH_CROP_LEVELS)
    present = np.array([isinstance(c, list) and len(c) == n_levels for c in crop_hashes], dtype=bool)
    hashes = np.zeros((len(crop_hashes), n_levels), np.uint64)
    rows = np.flatnonzero(present)
    if len(rows):
        hashes[rows] = parse_hashes([h for k in rows.tolist() for h in crop_hashes[k]]).reshape(-1, n_levels)
    return CropHashes(hashes, present)


def nearest_view(hashes: np.ndarray, crops: CropHashes | None, k: int, c: int) -> tuple[int, int | None, float | None]:
    """How close rows k and c are: the least Hamming distance between either's pHash and the other's pHash
    or crop pHashes, as (distance, the row whose crop it was or None, its crop level or None).
    Ties go to the plain pHashes, then to the smaller crop."""
    best = ((int(hashes[k]) ^ int(hashes[c])).bit_count(), None, None)
    for plain, cropped in ((k, c), (c, k)):
        if crops is not None and crops.present[cropped]:
            distances = np.bitwise_count(crops.hashes[cropped] ^ hashes[plain])
            i = int(np.argmin(distances))
            if distances[i] < best[0]:
                best = (int(distances[i]), cropped, PHASH_CROP_LEVELS[i])
    return best


def confirmation(phash_256: Callable[[int], list[str] | None], colour_histogram: Callable[[int], list[float] | None],
                 max_256: int, max_colour: float) -> Callable[[int, int], bool]:
    """The check a candidate pair (rows k, c) must pass: colour histograms within `max_colour` (L1) and
    256-bit pHashes within `max_256` bits, at the closest of the views (whole/whole, whole/crop, crop/whole).
    A row without a signal (null: written before ingest made it) cannot fail that check."""
    fine_cache: dict[int, list[int] | None] = {}

    def fine(k: int) -> list[int] | None:
        if k not in fine_cache:
            value = phash_256(k)
            fine_cache[k] = None if value is None else [int(h, 16) for h in value]
        return fine_cache[k]

    def confirmed(k: int, c: int) -> bool:
        a, b = colour_histogram(k), colour_histogram(c)
        if a is not None and b is not None and len(a) == len(b) and colour_distance(a, b) > max_colour:
            return False  # (histograms of different lengths were made with other bins: no signal)
        a, b = fine(k), fine(c)
        return a is None or b is None or phash_256_distance(a, b) <= max_256

    return confirmed


def colour_distance(a: list[float], b: list[float]) -> float:
    """L1 distance between two colour histograms: 0 for the same colours, up to 2."""
    return float(sum(abs(x - y) for x, y in zip(a, b, strict=True)))


def phash_256_distance(a: list[int], b: list[int]) -> int:
    """Least Hamming distance between 256-bit pHashes [whole, crop 1 %, ...] of two images, over the
    views whole/whole, whole/crop and crop/whole: the same geometry as the candidate search."""
    views = [(0, 0)] + [(0, i) for i in range(1, len(b))] + [(i, 0) for i in range(1, len(a))]
    return min((a[i] ^ b[j]).bit_count() for i, j in views)


def lake_canonicals(asset_ids: list[str], duplicate_of: list[str | None]) -> np.ndarray:
    """Position of each lake asset's canonical, following `duplicate_of` links to their end.

    A link to an asset missing from the table ends the walk there: that duplicate stands in for it.
    """
    position = {a: k for k, a in enumerate(asset_ids)}
    canonical = np.arange(len(asset_ids))
    for k in range(len(asset_ids)):
        c, hops = k, 0
        while duplicate_of[c] in position and hops < len(asset_ids):  # hops: a cycle cannot hang us
            c, hops = position[duplicate_of[c]], hops + 1
        canonical[k] = c
    return canonical


def index_entries(hashes: np.ndarray, crops: CropHashes | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pHash in the index: (value, owner row, level), level 0 for a row's own pHash and i for its
    crop at PHASH_CROP_LEVELS[i - 1]. Rows come first, in order, then the crops of the rows that have them."""
    n = len(hashes)
    values, owner, level = [hashes], [np.arange(n)], [np.zeros(n, np.int64)]
    if crops is not None:
        rows = np.flatnonzero(crops.present)
        n_levels = crops.hashes.shape[1]
        values.append(crops.hashes[rows].ravel())
        owner.append(np.repeat(rows, n_levels))
        level.append(np.tile(np.arange(1, n_levels + 1), len(rows)))
    return np.concatenate(values).astype(np.uint64), np.concatenate(owner), np.concatenate(level)


def link(hashes: np.ndarray, same_bytes_as: np.ndarray, fixed: np.ndarray, max_distance: int, *,
         crops: CropHashes | None = None, confirm: Callable[[int, int], bool] | None = None) -> np.ndarray:
    """The canonical position of each row; rows are in priority order (lake first, then input order).

    A row with `fixed[k] >= 0` (a lake asset) keeps that canonical. Any other row joins, in order:
    the canonical of the first row with its bytes, else the nearest canonical (by `nearest_view`) within
    2 × max_distance that `confirm(row, canonical)` accepts, among the groups of earlier rows that are
    candidates of it (ties: the earliest), else itself. Two rows are candidates when the pHash of one
    is within max_distance of the pHash or a crop pHash of the other (crop to crop does not count).
    """
    n = len(hashes)
    canonical = np.where(fixed >= 0, fixed, np.arange(n))
    values, owner, level = index_entries(hashes, crops)
    unique, node = np.unique(values, return_inverse=True)  # equal hashes share one index entry
    i, j, _ = near_pairs(unique, max_distance)
    # Per node: whether a row's own pHash is there, and its owner when only one row has entries there.
    has_plain = np.zeros(len(unique), bool)
    has_plain[node[:n]] = True
    by_node = np.argsort(node, kind="stable")
    starts = np.searchsorted(node[by_node], np.arange(len(unique)))
    lowest, highest = ((f.reduceat(owner[by_node], starts) if len(unique) else np.zeros(0, np.int64))
                       for f in (np.minimum, np.maximum))
    sole = np.where(lowest == highest, lowest, -1)
    # A pair counts if one side is a row's own pHash and the two sides are not all one row's hashes.
    keep = (has_plain[i] | has_plain[j]) & ((sole[i] != sole[j]) | (sole[i] < 0))
    a, b = np.concatenate([i[keep], j[keep]]), np.concatenate([j[keep], i[keep]])
    order = np.argsort(a, kind="stable")
    neighbours, bounds = b[order].tolist(), np.searchsorted(a[order], np.arange(len(unique) + 1)).tolist()
    # Only rows with an entry in a kept pair or on a node shared with another row, or repeated bytes, can
    # be linked; skip the rest.
    crowded = np.diff(bounds) > 0
    crowded |= (sole < 0) & has_plain
    rows = np.union1d(owner[crowded[node]], np.flatnonzero(same_bytes_as != np.arange(n)))
    crop_nodes: dict[int, list[int]] = {}
    for e in np.flatnonzero(np.isin(owner, rows) & (level > 0)).tolist():
        crop_nodes.setdefault(int(owner[e]), []).append(int(node[e]))
    plain_node, limit = node[:n].tolist(), 2 * max_distance
    canonical, fixed, same_bytes_as = canonical.tolist(), fixed.tolist(), same_bytes_as.tolist()
    plain_at: dict[int, set[int]] = {}  # node -> canonicals of the rows seen so far whose own pHash is there
    crop_at: dict[int, set[int]] = {}  # node -> canonicals of the rows seen so far with a crop pHash there

    def around(v: int) -> list[int]:
        return [v, *neighbours[bounds[v]:bounds[v + 1]]]

    for k in rows.tolist():
        if fixed[k] < 0 and same_bytes_as[k] != k:
            canonical[k] = canonical[same_bytes_as[k]]
        elif fixed[k] < 0:
            found = set()
            for v in around(plain_node[k]):
                found |= plain_at.get(v, set()) | crop_at.get(v, set())
            for u in crop_nodes.get(k, ()):
                for v in around(u):
                    found |= plain_at.get(v, set())
            best = (limit + 1, k)
            for c in found:
                candidate = (nearest_view(hashes, crops, k, c)[0], c)
                if candidate < best and (confirm is None or confirm(k, c)):
                    best = candidate
            if best[0] <= limit:
                canonical[k] = best[1]
        plain_at.setdefault(plain_node[k], set()).add(canonical[k])
        for u in crop_nodes.get(k, ()):
            crop_at.setdefault(u, set()).add(canonical[k])
    return np.array(canonical, dtype=np.int64)
