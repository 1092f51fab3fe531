"""What one dataset version says about itself: its samples, and the figures a card or a page shows.

Everything here reads one committed version (`AT (VERSION => n)`), so an export of version 3 made
today and one made next year say the same thing. Read-only: the lake is opened read-only by the
callers and only SELECTs run.

- `samples`: one row per question, the unit a person looks at: the question and its answer, the
  image it is about (a video question shows the video's first sampled frame), its best CoT
  (refined, else bridged, else raw), every verdict, its difficulty for every policy that rolled it
  out, and the reasons any stage rejected it (a rejected question stays visible, marked).
- `verification`: the share of verdicts that passed, overall, per verifier and per answer type.
- `difficulty_histograms`: per (policy, method), how pass rates spread over ten bins of 0.1.
- `rejects_by_reason`: counts per `<stage>.<slug>` with a few examples each.
- `lineage`: the runs up to this version, the recipe and config hash of this one, the models with
  their revisions and prompt versions, the stage versions, the policies.
"""

import json

import pyarrow as pa

from schemas.errors import UnknownVersion

# A question's CoT shown and exported: the SFT target first (WeThink's refined CoT), then
# Vision-R1's bridged chain, then the raw trace.
COT_PREFERENCE = ("refined", "bridged", "raw", "pseudo", "bridge")
PASS_RATE_BINS = 10
TABLES_WITH_MODELS = ("captions", "questions", "cots", "verdicts", "rollouts")
TABLES_WITH_STAGES = ("assets", "captions", "questions", "cots", "verdicts", "rollouts", "difficulty", "mixtures",
                      "policies", "rejects")


def resolve_version(lake, version: int | None) -> int:
    """`version`, checked to exist; the latest when None."""
    known = [v["version"] for v in lake.versions()]
    if version is None:
        if not known:
            raise UnknownVersion(lake.root.name, "(latest)", known)
        return known[-1]
    if int(version) not in known:
        raise UnknownVersion(lake.root.name, version, known)
    return int(version)


def _at(version: int) -> str:
    return f" AT (VERSION => {int(version)})"


def samples_query(version: int, *, limit: int | None = None) -> str:
    at = _at(version)
    cot_rank = " ".join(f"WHEN '{kind}' THEN {rank}" for rank, kind in enumerate(COT_PREFERENCE))
    return f"""
        WITH best_cot AS (
            SELECT DISTINCT ON (question_id) question_id, cot_id, kind, text, final_answer
            FROM cots{at} ORDER BY question_id, CASE kind {cot_rank} ELSE {len(COT_PREFERENCE)} END, cot_id),
        cot_verdict AS (
            SELECT subject_id, bool_and(passed) AS passed, string_agg(DISTINCT verifier, ',' ORDER BY verifier) AS verifier
            FROM verdicts{at} GROUP BY subject_id),
        question_verdicts AS (
            SELECT question_id, list(struct_pack(subject_id := subject_id, verifier := verifier, passed := passed,
                                                 score := score, detail := detail) ORDER BY subject_id, verifier) AS verdicts
            FROM verdicts{at} GROUP BY question_id),
        question_difficulty AS (
            SELECT question_id, list(struct_pack(policy_id := policy_id, method := method, n_rollouts := n_rollouts,
                                                 pass_rate := pass_rate, pass_rate_text_only := pass_rate_text_only,
                                                 learnability := learnability, selected := selected)
                                     ORDER BY policy_id, method) AS difficulty
            FROM difficulty{at} GROUP BY question_id),
        question_rejects AS (
            SELECT question_id, list(DISTINCT reason ORDER BY reason) AS reject_reasons FROM (
                SELECT subject_id AS question_id, reason FROM rejects{at} WHERE starts_with(subject_id, 'question-')
                UNION ALL
                SELECT input_id, reason FROM rejects{at} WHERE starts_with(input_id, 'question-'))
            GROUP BY question_id),
        first_frame AS (
            SELECT DISTINCT ON (parent_asset_id) parent_asset_id, media_uri
            FROM assets{at} WHERE kind = 'frame' ORDER BY parent_asset_id, frame_ts, asset_id)
        SELECT q.question_id, q.question, q.answer, q.answer_type, q.choices, q.category, q.abilities, q.reward_route,
               a.asset_id, a.kind AS asset_kind, a.source, a.width, a.height,
               CASE WHEN a.kind = 'video' THEN f.media_uri ELSE a.media_uri END AS image_uri,
               c.kind AS cot_kind, c.text AS cot, c.final_answer AS cot_answer,
               cv.passed AS verified, cv.verifier,
               qv.verdicts, qd.difficulty, coalesce(qr.reject_reasons, []) AS reject_reasons
        FROM questions q{at}
        LEFT JOIN assets a{at} ON a.asset_id = q.asset_ids[1]
        LEFT JOIN first_frame f ON f.parent_asset_id = a.asset_id
        LEFT JOIN best_cot c ON c.question_id = q.question_id
        LEFT JOIN cot_verdict cv ON cv.subject_id = c.cot_id
        LEFT JOIN question_verdicts qv ON qv.question_id = q.question_id
        LEFT JOIN question_difficulty qd ON qd.question_id = q.question_id
        LEFT JOIN question_rejects qr ON qr.question_id = q.question_id
        ORDER BY q.question_id
        {'' if limit is None else f'LIMIT {int(limit)}'}"""


def samples(lake, version: int, *, limit: int | None = None) -> pa.Table:
    """One row per question of `version` (see the module doc), ordered by question id."""
    return lake.sql(samples_query(version, limit=limit))


def count_rows(lake, version: int, table: str) -> int:
    return lake.sql(f"SELECT count(*) AS n FROM {table}{_at(version)}").column("n")[0].as_py()


def pass_rate(n_passed: int, n: int) -> float | None:
    """Share passed; None for no verdicts (unknown, not 0).

    >>> pass_rate(3, 4)
    0.75
    >>> pass_rate(0, 0) is None
    True
    """
    return n_passed / n if n else None


def histogram(values, bins: int = PASS_RATE_BINS) -> list[int]:
    """Counts of `values` in [0, 1] over `bins` equal bins; 1.0 goes in the last bin.

    >>> histogram([0.0, 0.05, 0.1, 0.5, 0.99, 1.0], bins=10)
    [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    >>> histogram([], bins=2)
    [0, 0]
    """
    counts = [0] * bins
    for value in values:
        counts[min(int(value * bins), bins - 1)] += 1
    return counts


def bin_edges(bins: int = PASS_RATE_BINS) -> list[float]:
    """
    >>> bin_edges(4)
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    return [round(i / bins, 10) for i in range(bins + 1)]


def verification(lake, version: int) -> dict:
    """Verdicts passed, overall and per verifier and per answer type of the question."""
    rows = lake.sql(f"""
        SELECT v.verifier, q.answer_type, count(*) AS n, count(*) FILTER (WHERE v.passed) AS n_passed
        FROM verdicts v{_at(version)} LEFT JOIN questions q{_at(version)} USING (question_id)
        GROUP BY ALL ORDER BY ALL""").to_pylist()

    def rollup(key):
        groups: dict = {}
        for row in rows:
            group = groups.setdefault(row[key] or "unknown", [0, 0])
            group[0] += row["n"]
            group[1] += row["n_passed"]
        return [{key: name, "n": n, "n_passed": passed, "pass_rate": pass_rate(passed, n)}
                for name, (n, passed) in sorted(groups.items())]

    n, n_passed = sum(r["n"] for r in rows), sum(r["n_passed"] for r in rows)
    return {"n": n, "n_passed": n_passed, "pass_rate": pass_rate(n_passed, n),
            "by_verifier": rollup("verifier"), "by_answer_type": rollup("answer_type")}


def difficulty_histograms(lake, version: int, *, bins: int = PASS_RATE_BINS) -> list[dict]:
    """Per (policy, method): pass-rate histogram over `bins` bins, rows without a pass rate, mean."""
    rows = lake.sql(f"""
        SELECT policy_id, method, list(pass_rate) FILTER (WHERE pass_rate IS NOT NULL) AS pass_rates,
               count(*) FILTER (WHERE pass_rate IS NULL) AS n_unscored,
               count(*) FILTER (WHERE selected) AS n_selected
        FROM difficulty{_at(version)} GROUP BY ALL ORDER BY ALL""").to_pylist()
    out = []
    for row in rows:
        rates = row["pass_rates"] or []
        out.append({"policy_id": row["policy_id"], "method": row["method"], "n_scored": len(rates),
                    "n_unscored": row["n_unscored"], "n_selected": row["n_selected"],
                    "mean_pass_rate": sum(rates) / len(rates) if rates else None,
                    "bin_edges": bin_edges(bins), "counts": histogram(rates, bins)})
    return out


def rejects_by_reason(lake, version: int, *, examples: int = 3) -> list[dict]:
    """Every reject reason with its count and up to `examples` (subject, detail) pairs, commonest first."""
    rows = lake.sql(f"""
        SELECT stage, reason, count(*) AS n,
               list(struct_pack(subject_id := subject_id, detail := detail) ORDER BY subject_id)[1:{int(examples)}] AS examples
        FROM rejects{_at(version)} GROUP BY ALL ORDER BY n DESC, reason""").to_pylist()
    return rows


def sources(lake, version: int) -> list[dict]:
    """Assets per source and kind (synthetic, image_folder, hf_dataset; image, video, frame)."""
    return lake.sql(f"SELECT source, kind, count(*) AS n FROM assets{_at(version)} GROUP BY ALL ORDER BY ALL").to_pylist()


def table_counts(lake, version: int, tables) -> dict[str, int]:
    return {name: count_rows(lake, version, name) for name in tables}


def lineage(lake, version: int) -> dict:
    """Runs up to `version`, this version's recipe and config hash, models, stage versions, policies."""
    at = _at(version)
    runs = lake.sql(f"""SELECT version, name, recipe, run_id, config_hash, created_at
                        FROM versions{at} WHERE version <= {int(version)} ORDER BY version""").to_pylist()
    for run in runs:
        run["created_at"] = run["created_at"].isoformat()
    this = lake.sql(f"SELECT recipe, run_id, config_hash, config FROM versions{at} WHERE version = {int(version)}").to_pylist()[0]
    model_rows = " UNION ALL ".join(
        f"SELECT '{name}' AS table_name, model, model_revision, prompt_version FROM {name}{at} WHERE model IS NOT NULL"
        for name in TABLES_WITH_MODELS)
    models = lake.sql(f"""
        SELECT model, model_revision, list(DISTINCT prompt_version ORDER BY prompt_version) AS prompt_versions,
               list(DISTINCT table_name ORDER BY table_name) AS tables, count(*) AS n_rows
        FROM ({model_rows}) GROUP BY ALL ORDER BY model, model_revision""").to_pylist()
    stage_rows = " UNION ALL ".join(f"SELECT stage, stage_version FROM {name}{at}" for name in TABLES_WITH_STAGES)
    stage_versions = lake.sql(f"""SELECT stage, list(DISTINCT stage_version ORDER BY stage_version) AS stage_versions
                                  FROM ({stage_rows}) GROUP BY stage ORDER BY stage""").to_pylist()
    policies = lake.sql(f"""
        SELECT d.policy_id, any_value(p.kind) AS kind, any_value(p.base_policy_id) AS base_policy_id,
               any_value(p.steps) AS steps, count(*) AS n_difficulty_rows
        FROM difficulty d{at} LEFT JOIN policies p{at} USING (policy_id)
        GROUP BY d.policy_id
        ORDER BY CASE any_value(p.kind) WHEN 'sft' THEN 1 WHEN 'grpo' THEN 2 ELSE 0 END, d.policy_id""").to_pylist()
    config = json.loads(this["config"])
    return {"version": int(version), "recipe": this["recipe"], "run_id": this["run_id"], "config_hash": this["config_hash"],
            "license": config.get("license"), "runs": runs, "models": models,
            "stage_versions": {row["stage"]: row["stage_versions"] for row in stage_versions}, "policies": policies}
