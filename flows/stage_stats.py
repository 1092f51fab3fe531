"""`flow versions --stages`: what every stage did in the run behind each version (table `stage_stats`).

One row per (version, step): items in, kept and rejected (with the most frequent reasons), shards run
and cached, model calls made and answered from the call cache, prompt and completion tokens of the
calls made, and seconds. Rows of runs written before schema version 5 (`stage_counts`) have no call
or token counts: they show as empty, not as zero.
"""

import json

from schemas.errors import UnknownVersion


def stage_rows(lake, *, version: int | None = None) -> list[dict]:
    """Per-stage stats of every version's run, oldest version first (only `version` when given)."""
    versions = lake.versions()
    if version is not None:
        versions = [v for v in versions if v["version"] == version]
        if not versions:
            raise UnknownVersion(lake.root.name, version, [v["version"] for v in lake.versions()])
    by_run: dict[str, list[dict]] = {}
    for row in lake.table("stage_stats").to_pylist():
        by_run.setdefault(row["run_id"], []).append(row)
    rows = []
    for v in versions:
        for stat in sorted(by_run.get(v["run_id"], []), key=lambda s: s["step_index"]):
            reasons = json.loads(stat["rejected_by_reason"] or "{}")
            top = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items(), key=lambda x: (-x[1], x[0]))[:2])
            rows.append({"version": v["version"], "step": stat["step_index"] + 1, "stage": stat["stage"],
                         "in": stat["n_in"], "kept": stat["n_out"], "rejected": stat["n_rejected"], "top_reasons": top,
                         "shards": stat["n_shards"], "shards_cached": stat["n_shards_cached"],
                         "calls_made": stat["n_calls_made"], "calls_cached": stat["n_calls_cached"],
                         "prompt_tokens": stat["prompt_tokens"], "completion_tokens": stat["completion_tokens"],
                         "wall_s": stat["wall_s"]})
    return rows


def for_people(rows: list[dict]) -> list[dict]:
    """The same rows in fewer columns, to fit a terminal: `n (cached)` pairs and `in / out` tokens."""

    def known(value):
        return "" if value is None else value

    return [{"version": r["version"], "step": r["step"], "stage": r["stage"], "in": r["in"], "kept": r["kept"],
             "rejected": r["rejected"], "top reasons": r["top_reasons"], "shards (cached)": f"{r['shards']} ({r['shards_cached']})",
             "calls (cached)": "" if r["calls_made"] is None else f"{r['calls_made']} ({r['calls_cached']})",
             "tokens in / out": "" if r["prompt_tokens"] is None else f"{r['prompt_tokens']} / {r['completion_tokens']}",
             "seconds": known(r["wall_s"])} for r in rows]
