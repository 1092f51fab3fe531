"""Dedup: link exact (sha256) and perceptual (pHash) duplicates to one canonical asset.

Counts per asset: every asset of this run comes out unchanged, except that a duplicate gets
`duplicate_of` (its canonical asset) and `duplicate_distance` (pHash Hamming distance to it, 0 for
the same bytes) and a reject, `dedup.exact_duplicate` or `dedup.near_duplicate`, so it is excluded
downstream but never deleted. Assets already in the lake are never re-linked; they win over new ones.
Ids are content-addressed, so a new row with a lake asset's id is that asset again: it keeps the
lake's link (none, or its canonical), never a link to itself.

Phases: `parse_hashes` (hex → uint64), `exact_groups` (same sha256), `near_pairs` (the index: every
pair within `max_distance` bits, found by multi-index hashing, never a pairwise loop) and `link`
(pick canonicals). Linking is greedy in priority order (lake first, then input order): an asset with
the same bytes as an earlier one joins that one's canonical; otherwise it joins the nearest canonical
among the earlier assets within the threshold of it, provided that canonical is at most 2× the
threshold away; otherwise it is a canonical itself. The 2× cap stops chains of small edits (frames of
a pan, a scene redrawn step by step) from merging distant images, while a copy of a copy still finds
its original. So no kept asset of this run lies within the threshold of another kept asset (lake
canonicals included), and every duplicate lies within the threshold of an asset of its group and
within 2× of its canonical.

Why 4 bits: imagehash's pHash moves 0–2 of 64 bits under resizing to 80 % or JPEG at quality 80
(0–4 for both), and crops of 1 % per border stay within 4 bits for 199 of 200 synthetic scenes,
while unrelated images sit near 32 bits apart (≥ 10 among those 200). pHash is weak on crops:
2 % per border stays within 4 bits for ~78 % of scenes, 3 % for ~51 % (up to 12 bits); those
copies are caught only through a closer copy, or kept. Raise the threshold with care: the closest
unrelated pair of those scenes was 10 bits apart, and links may span 2× the threshold.
"""

import itertools
import math

import numpy as np
import pyarrow as pa

from pipelines.stage import StageContext, StageResult, stage

CANDIDATES_PER_SLICE = 1 << 22  # bounds the temporaries of one probe (~100 MB) when buckets are crowded


@stage(reads={"assets": ["asset_id", "sha256", "phash"],
              "lake.assets": ["asset_id", "sha256", "phash", "duplicate_of"]},
       writes="assets", version=1, unit="asset", sharded=False)  # one index must see every asset at once
def dedup(assets: pa.Table, lake_assets: pa.Table, ctx: StageContext, *, phash_max_distance: int = 4) -> StageResult:
    """`phash_max_distance`: largest pHash Hamming distance (of 64 bits) that counts as a near duplicate."""
    n_lake = lake_assets.num_rows
    ids = lake_assets["asset_id"].to_pylist() + assets["asset_id"].to_pylist()
    sha256 = lake_assets["sha256"].to_pylist() + assets["sha256"].to_pylist()
    hashes = parse_hashes(lake_assets["phash"].to_pylist() + assets["phash"].to_pylist())
    fixed = np.full(len(ids), -1)
    fixed[:n_lake] = lake_canonicals(ids[:n_lake], lake_assets["duplicate_of"].to_pylist())
    canonical = link(hashes, exact_groups(sha256), fixed, phash_max_distance)
    distance = np.bitwise_count(hashes ^ hashes[canonical])

    duplicate_of, duplicate_distance, rejects = [None] * assets.num_rows, [None] * assets.num_rows, []
    for row, (k, c) in enumerate(zip(range(n_lake, len(ids)), canonical[n_lake:].tolist())):
        if ids[c] == ids[k]:  # a canonical, or (ids being content-addressed) a lake canonical again
            continue
        duplicate_of[row], duplicate_distance[row] = ids[c], int(distance[k])
        if sha256[c] == sha256[k]:
            rejects.append(ctx.reject(ids[k], "dedup.exact_duplicate", detail=f"same bytes as {ids[c]}"))
        else:
            rejects.append(ctx.reject(ids[k], "dedup.near_duplicate",
                                      detail=f"pHash distance {distance[k]} to {ids[c]}"))
    out = assets.set_column(assets.schema.get_field_index("duplicate_of"), "duplicate_of",
                            pa.array(duplicate_of, pa.string()))
    out = out.set_column(out.schema.get_field_index("duplicate_distance"), "duplicate_distance",
                         pa.array(duplicate_distance, pa.int64()))
    return StageResult(out=out, rejects=ctx.rejects(rejects))


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


def near_pairs(hashes: np.ndarray, max_distance: int, *, n_chunks: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j) of `hashes` (uint64) within `max_distance` bits: (i, j, distance), sorted.

    Multi-index hashing (Norouzi et al., CVPR 2012): split the 64 bits into m chunks. If two hashes
    differ in at most r bits, some chunk differs in at most r // m bits (pigeonhole), so it suffices
    to look each hash's chunk up, and every chunk value within r // m bits of it, in a bucket table
    per chunk, then verify the candidates with a popcount. Exact: no pair within r is missed.
    Buckets are direct-address tables (counts → start offsets, members sorted by chunk value).
    `n_chunks` overrides the planned m (tests use it to exercise probing).
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    widths, radius = plan_chunks(n, max_distance, n_chunks=n_chunks)
    found = [(np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.uint8),)]
    shift = 0
    for width in widths:
        keys = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        shift += width
        # Work in bucket order: queries and their candidates then sit close together in memory,
        # which makes the table reads near-sequential (twice as fast as input order at 1M).
        members = np.argsort(keys, kind="stable")
        keys, member_hashes = keys[members], hashes[members]
        starts = np.zeros((1 << width) + 1, np.int64)
        np.cumsum(np.bincount(keys, minlength=1 << width), out=starts[1:])
        for flip in chunk_flips(width, radius):
            if flip == 0:  # its own bucket: only the members after it, so no self-match, each pair once
                query = np.arange(n)
                first = query + 1
                count = starts[keys + 1] - first
            else:  # buckets b and b ^ flip see each other: probe only from the lower one, never twice
                query = np.flatnonzero((keys ^ flip) > keys)
                probe = keys[query] ^ flip
                first = starts[probe]
                count = starts[probe + 1] - first
            for q, slot in expand(query, first, count):
                distance = np.bitwise_count(member_hashes[q] ^ member_hashes[slot])
                hit = np.flatnonzero(distance <= max_distance)
                a, b = members[q[hit]], members[slot[hit]]
                found.append((np.minimum(a, b), np.maximum(a, b), distance[hit]))
    i, j, distance = (np.concatenate(parts) for parts in zip(*found))
    _, unique = np.unique(i * n + j, return_index=True)  # a pair may match in several chunks
    return i[unique], j[unique], distance[unique]


def plan_chunks(n: int, max_distance: int, *, n_chunks: int | None = None) -> tuple[list[int], int]:
    """Chunk widths and probe radius for `n` hashes: the m (≥ 3) with the least expected work.

    Per chunk of w bits probed at P values: each hash makes (P + 1) / 2 probes (buckets pair up, so
    a nonzero flip is probed from one side only), a probe costs about two candidate checks, a
    bucket holds n / 2^w random hashes, and the table costs 2^w. At least 3 chunks keep a table at
    ≤ 2^22 slots (32 MB). For r = 4: 3 chunks probed at radius 1 from ~200k hashes up (1M: 1.2 s),
    5 exact-match chunks below. Larger r costs more (1M at r = 6: 5 s), but stays exact and bounded.
    """
    if not 0 <= max_distance < 64:
        raise ValueError(f"max_distance must be within 0..63 bits, not {max_distance}")

    def work(m: int) -> float:
        radius, total = max_distance // m, 0.0
        for width in chunk_widths(m):
            probes = sum(math.comb(width, k) for k in range(radius + 1))
            total += n * (probes + 1) + n * n * probes / 2 ** (width + 1) + 2**width
        return total

    if n_chunks is not None and not 3 <= n_chunks <= 64:
        raise ValueError(f"n_chunks must be within 3..64 (a chunk of more than 22 bits has no table), not {n_chunks}")
    m = n_chunks or min(range(3, max(3, max_distance + 1) + 1), key=work)
    return chunk_widths(m), max_distance // m


def chunk_widths(m: int) -> list[int]:
    return [64 // m + (k < 64 % m) for k in range(m)]


def chunk_flips(width: int, radius: int) -> list[int]:
    """Every `width`-bit mask with at most `radius` bits set: the offsets to probe around a chunk."""
    return [sum(1 << b for b in bits) for r in range(radius + 1) for bits in itertools.combinations(range(width), r)]


def expand(query: np.ndarray, first: np.ndarray, count: np.ndarray):
    """Yield (query, slot) arrays that pair each query with each of its `count` bucket slots from
    `first` on, in slices of about CANDIDATES_PER_SLICE pairs so a crowded table cannot exhaust memory."""
    ends = np.cumsum(count)
    total = int(ends[-1]) if len(ends) else 0
    cuts = np.searchsorted(ends, np.arange(CANDIDATES_PER_SLICE, total, CANDIDATES_PER_SLICE)) + 1
    for lo, hi in itertools.pairwise([0, *np.unique(cuts).tolist(), len(count)]):
        some = lo + np.flatnonzero(count[lo:hi])
        n_slots = count[some]
        before = np.cumsum(n_slots) - n_slots  # pairs of this slice before each query's own
        slot = np.repeat(first[some] - before, n_slots) + np.arange(int(n_slots.sum()))
        yield np.repeat(query[some], n_slots), slot


def link(hashes: np.ndarray, same_bytes_as: np.ndarray, fixed: np.ndarray, max_distance: int) -> np.ndarray:
    """The canonical position of each row; rows are in priority order (lake first, then input order).

    A row with `fixed[k] >= 0` (a lake asset) keeps that canonical. Any other row joins, in order:
    the canonical of the first row with its bytes, else the nearest canonical within 2 × max_distance
    among earlier rows within max_distance of it (ties: the earliest), else itself.
    """
    n = len(hashes)
    canonical = np.where(fixed >= 0, fixed, np.arange(n))
    values, node = np.unique(hashes, return_inverse=True)  # equal pHashes share one index entry
    i, j, _ = near_pairs(values, max_distance)
    a, b = np.concatenate([i, j]), np.concatenate([j, i])
    order = np.argsort(a, kind="stable")
    neighbours, bounds = b[order].tolist(), np.searchsorted(a[order], np.arange(len(values) + 1)).tolist()
    # Only rows that share a pHash, have a near pHash or repeat bytes can be linked; skip the rest.
    crowded = (np.bincount(node, minlength=len(values)) > 1) | (np.diff(bounds) > 0)
    rows = np.flatnonzero(crowded[node] | (same_bytes_as != np.arange(n)))
    h, node, limit = hashes.tolist(), node.tolist(), 2 * max_distance
    canonical, fixed, same_bytes_as = canonical.tolist(), fixed.tolist(), same_bytes_as.tolist()
    canonicals_of_node: dict[int, set[int]] = {}  # canonicals of the rows seen so far, per pHash value
    for k in rows.tolist():
        if fixed[k] < 0 and same_bytes_as[k] != k:
            canonical[k] = canonical[same_bytes_as[k]]
        elif fixed[k] < 0:
            best = (limit + 1, k)
            for v in [node[k], *neighbours[bounds[node[k]]:bounds[node[k] + 1]]]:
                for c in canonicals_of_node.get(v, ()):
                    best = min(best, ((h[k] ^ h[c]).bit_count(), c))
            if best[0] <= limit:
                canonical[k] = best[1]
        canonicals_of_node.setdefault(node[k], set()).add(canonical[k])
    return np.array(canonical, dtype=np.int64)
