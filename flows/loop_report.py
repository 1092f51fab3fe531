"""`flow report loop`: what each round of a loop run did, read back from the version the run left.

A loop run (a recipe with `loop:`, flows/loop.py) commits one version. This reads its `loop_rounds`
rows and, as of the same version, the policies, `group_stats` difficulty rows, rollouts and splits.
Per round:
- policy: the policy the round trained, and the one it started from (whose difficulty rows it selected on);
- train reward: the GRPO step's mean reward over its last steps (`policies.train_reward`);
- held-out reward: mean reward of the policy's rollouts *with the image* on the held-out questions
  (the `holdout` stage's `splits`; none without one). Round 0 is the starting policy, scored by the
  build's `rollouts`: the figure every round is compared with;
- pass-rate shift: the mean pass rate of the trained policy and of its starting policy on the
  questions both were scored on, with each one's histogram (pipelines/round_stats.py);
- became easy / hard: how many of those questions crossed pass rate ≥ 0.9 / ≤ 0.1 (the thresholds are
  options of the command, and are stated in every report).
"""

from pathlib import Path

from pipelines.round_stats import BINS, MAX_HARD_PASS_RATE, MIN_EASY_PASS_RATE, pass_rate_histogram, round_shift
from schemas.errors import LakeError
from stores.lake import Lake


def loop_report(lake: Lake, *, version: int | None = None, min_easy_pass_rate: float = MIN_EASY_PASS_RATE,
                max_hard_pass_rate: float = MAX_HARD_PASS_RATE) -> dict:
    """The per-round report of the loop run that made `version` (default: the newest version a loop made)."""
    dataset = lake.root.name
    loop_versions = _loop_versions(lake)
    if version is None:
        if not loop_versions:
            raise LakeError(f"dataset {dataset!r} has no version made by a loop run; make one with "
                            f"`flow run loop-grpo --dataset {dataset}` (or any recipe with a `loop:` block)")
        version = loop_versions[-1]
    lake._check_version(version)  # UnknownVersion lists the versions there are
    run = next(v for v in lake.versions() if v["version"] == version)
    if version not in loop_versions:
        made = f"versions made by a loop: {', '.join(map(str, loop_versions))}" if loop_versions else "no version was made by a loop yet"
        raise LakeError(f"version {version} of {dataset!r} was made by {run['recipe']!r}, which ran no loop rounds ({made}). "
                        f"Run one with `flow run loop-grpo --dataset {dataset}`")
    at = f" AT (VERSION => {int(version)})"
    rounds = lake.sql(f"SELECT * FROM loop_rounds{at} WHERE run_id = '{_quote(run['run_id'])}' ORDER BY round").to_pylist()
    policy_ids = [rounds[0]["scored_by"]] + [r["policy_id"] for r in rounds if r["policy_id"]]
    listed = ", ".join(f"'{_quote(p)}'" for p in policy_ids)
    held_out = {r["question_id"] for r in lake.sql(f"SELECT question_id FROM splits{at} WHERE split = 'held_out'").to_pylist()}
    rewards = {r["policy_id"]: r for r in lake.sql(f"""
        SELECT r.policy_id, avg(r.reward) AS held_out_reward, count(DISTINCT r.question_id) AS n_held_out_scored
        FROM (FROM rollouts{at}) AS r JOIN (FROM splits{at}) AS s ON s.question_id = r.question_id
        WHERE s.split = 'held_out' AND r.with_image AND r.policy_id IN ({listed})
        GROUP BY 1""").to_pylist()}
    pass_rates: dict[str, dict[str, float]] = {p: {} for p in policy_ids}
    for row in lake.sql(f"""SELECT policy_id, question_id, pass_rate FROM difficulty{at}
                            WHERE method = 'group_stats' AND pass_rate IS NOT NULL AND policy_id IN ({listed})""").to_pylist():
        pass_rates[row["policy_id"]][row["question_id"]] = row["pass_rate"]
    policies = {p["policy_id"]: p for p in lake.sql(f"SELECT policy_id, train_reward, steps FROM policies{at} WHERE policy_id IN ({listed})").to_pylist()}

    def held_out_of(policy_id: str) -> dict:
        found = rewards.get(policy_id, {})
        return {"held_out_reward": found.get("held_out_reward"), "n_held_out_scored": found.get("n_held_out_scored", 0)}

    start = rounds[0]["scored_by"]
    start_rates = list(pass_rates[start].values())
    report_rounds = []
    for r in rounds:
        trained = r["policy_id"]
        entry = {"round": r["round"], "policy_id": trained, "trained_from": r["scored_by"], "n_candidates": r["n_candidates"],
                 "n_selected": r["n_selected"], "n_trained": r["n_trained"], "n_rescored": r["n_rescored"],
                 "train_reward": policies.get(trained, {}).get("train_reward"), "steps": policies.get(trained, {}).get("steps"),
                 "note": r["note"]}
        entry |= held_out_of(trained) if trained else {"held_out_reward": None, "n_held_out_scored": 0}
        entry |= round_shift(pass_rates[r["scored_by"]], pass_rates.get(trained, {}), min_easy_pass_rate=min_easy_pass_rate,
                             max_hard_pass_rate=max_hard_pass_rate)
        report_rounds.append(entry)
    return {"dataset": dataset, "version": version, "run_id": run["run_id"], "recipe": run["recipe"],
            "n_held_out": len(held_out), "bins": list(BINS),
            "thresholds": {"min_easy_pass_rate": min_easy_pass_rate, "max_hard_pass_rate": max_hard_pass_rate},
            "start": {"policy_id": start, **held_out_of(start), "n_scored": len(start_rates),
                      "mean_pass_rate": sum(start_rates) / len(start_rates) if start_rates else None,
                      "histogram": pass_rate_histogram(start_rates)},
            "rounds": report_rounds}


def report_of_run(root: Path, version: int | None) -> dict | None:
    """The report for `version` if a loop made it (the run's artifact); None otherwise (e.g. `rounds: 0`)."""
    if version is None:
        return None
    with Lake.open(root, read_only=True) as lake:
        return loop_report(lake, version=version) if version in _loop_versions(lake) else None


def table_rows(report: dict) -> list[dict]:
    """One row per round, round 0 being the starting policy: the table `flow report loop` prints.
    (Round r started from round r−1's policy; the JSON report names it as `trained_from`.)"""
    start = report["start"]
    rows = [{"round": 0, "policy": start["policy_id"], "selected": None, "trained": None, "train reward": None,
             "held-out reward": _number(start["held_out_reward"]), "pass rate": _number(start["mean_pass_rate"]),
             "paired": None, "histogram": _histogram(start["histogram"]), "easier": None, "harder": None}]
    for r in report["rounds"]:
        rows.append({"round": r["round"], "policy": r["policy_id"] or "(none)", "selected": r["n_selected"], "trained": r["n_trained"],
                     "train reward": _number(r["train_reward"]), "held-out reward": _number(r["held_out_reward"]),
                     "pass rate": f"{_number(r['mean_pass_rate_before'])} → {_number(r['mean_pass_rate'])}", "paired": r["n_paired"],
                     "histogram": _histogram(r["histogram"]), "easier": r["n_became_easy"], "harder": r["n_became_hard"]})
    return rows


def legend(report: dict) -> str:
    """What the columns mean, with the thresholds this report used."""
    t = report["thresholds"]
    return (f"Round r trains from round r−1's policy, on items selected by that policy's difficulty rows. "
            f"Train reward: GRPO's summed reward functions over its last steps. Held-out reward: mean reward (the rollouts' "
            f"preset) with the image on the {report['n_held_out']} held-out questions, never trained on. Pass rate: mean, "
            f"starting policy → trained policy, on the `paired` questions both were scored on. Histogram of pass rates: "
            f"{' | '.join(report['bins'])}. Easier: crossed to pass rate ≥ {t['min_easy_pass_rate']}; "
            f"harder: crossed to ≤ {t['max_hard_pass_rate']}.")


def loop_markdown(report: dict) -> str:
    """The per-round table as markdown, for the run's Prefect artifact."""
    rows = table_rows(report)
    columns = list(rows[0])
    lines = [f"## Loop rounds (version {report['version']})", "", "| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if c in ("policy", "histogram") else "---:" for c in columns) + "|"]
    lines += ["| " + " | ".join("" if row[c] is None else str(row[c]) for c in columns) + " |" for row in rows]
    notes = [r["note"] for r in report["rounds"] if r["note"]]
    return "\n".join(lines + ["", legend(report)] + [f"Note: {n}" for n in notes]) + "\n"


def _loop_versions(lake: Lake) -> list[int]:
    if "loop_rounds" not in lake.tables():
        return []
    rows = lake.sql("SELECT DISTINCT v.version FROM versions v JOIN loop_rounds r ON r.run_id = v.run_id ORDER BY 1").to_pylist()
    return [r["version"] for r in rows]


def _number(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


def _histogram(counts: list[int]) -> str:
    return "/".join(map(str, counts))


def _quote(text: str) -> str:
    return text.replace("'", "''")
