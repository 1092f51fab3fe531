"""The closed loop: a recipe's `loop:` steps, run `rounds` times after its `steps`, in the same flow run.

Round r selects on the difficulty rows of the policy round r−1 trained (round 1: the recipe's
`models.policy`, scored by the build's `rollouts` and `difficulty`), trains from that policy (the
`policy` role is re-bound to its checkpoint), and re-scores with the policy it trained: round r+1
selects on those rows. A round's steps see the run's tables with one difference: `difficulty` holds
only the rows *for the round's scoring policy*, on questions of the training split (`splits`, from
the `holdout` stage). Difficulty is always for a policy, and held-out questions are never selected
or trained on; `rescore` still re-runs them, which gives each round its held-out reward.

Every step of every round is a step like any other: a task per shard, cached, counted (in = kept +
rejected, one `stage_stats` row each, step indexes continuing round after round). Each round also
gets a `loop_rounds` row: who scored, who was trained, how many items went through. A round that
trains nothing (nothing was selected) ends the loop, with a note.

The whole loop is one run and so one snapshot, one version, as for every recipe: version N is what
one run left, `flow report loop --version N` reads all of its rounds back from it, and a run that
dies in round 3 commits no half loop (its finished shards are cached: the re-run resumes there).
"""

from dataclasses import dataclass, replace
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from flows.recipes import Recipe
from flows.run_tables import RunTables
from pipelines.engines import EngineRegistry
from pipelines.stage import StageSpec
from schemas import TABLES, make_id

# run_step(step, tables, registry) -> {"row": stage_stats row, "summary": ...}: recipe_flow._run_step, bound
RunStep = Callable[..., dict]


@dataclass(frozen=True)
class Scorer:
    """The policy a round selects on and trains from."""

    policy_id: str
    path: str


def run_rounds(recipe: Recipe, run_step: RunStep, tables: RunTables, registry: EngineRegistry, *,
               run_id: str) -> tuple[list[dict], pa.Table]:
    """Run the recipe's rounds; return every round step's result and the `loop_rounds` rows."""
    from pipelines.stages.rollouts import policy_id_of

    policy = registry.engine("policy")
    scorer = Scorer(policy_id_of(policy), str(policy.model))
    results, rounds = [], []
    for number in range(1, recipe.rounds + 1):
        held_out = held_out_ids(tables)
        view = RoundTables(tables, scorer.policy_id, held_out)
        n_candidates = view.read("difficulty").num_rows
        round_registry = registry if number == 1 else registry.rebind("policy", scorer.path)
        steps = [replace(step, index=step.index + (number - 1) * len(recipe.loop)) for step in recipe.loop]
        done = [run_step(step, view, round_registry) for step in steps]
        for result in done:
            result["summary"]["round"] = number
        trained = newest_policy(tables)
        rounds.append(round_row(run_id, number, scorer, trained, done, n_candidates=n_candidates, n_held_out=len(held_out)))
        results += done
        if trained is None:
            break
        scorer = trained
    return results, pa.Table.from_pylist(rounds, schema=TABLES["loop_rounds"].schema)


def round_row(run_id: str, number: int, scorer: Scorer, trained: Scorer | None, done: list[dict], *, n_candidates: int,
              n_held_out: int) -> dict:
    """The `loop_rounds` row of a round, from its steps' counts."""
    counts = {r["row"]["stage"]: r["row"] for r in done}
    return {"loop_round_id": make_id("loop_round", run_id, number), "run_id": run_id, "round": number,
            "scored_by": scorer.policy_id, "policy_id": trained.policy_id if trained else None, "n_candidates": n_candidates,
            "n_selected": counts["select"]["n_out"] if "select" in counts else counts["grpo"]["n_in"],
            "n_trained": counts["grpo"]["n_out"], "n_rescored": counts["rescore"]["n_out"], "n_held_out": n_held_out,
            "step_indexes": [r["row"]["step_index"] for r in done],
            "note": None if trained else f"round {number} trained no policy (nothing was selected); later rounds skipped"}


def held_out_ids(tables: RunTables) -> set[str]:
    """Questions the `holdout` stage set aside (this run's splits, else the lake's); none without one."""
    splits = tables.read("splits")
    return {q for q, split in zip(splits.column("question_id").to_pylist(), splits.column("split").to_pylist()) if split == "held_out"}


def newest_policy(tables: RunTables) -> Scorer | None:
    """The GRPO policy the last `grpo` step wrote (its live output), or None when it trained nothing."""
    if "policies" not in tables.tables:
        return None
    trained = [p for p in tables.read("policies").to_pylist() if p["kind"] == "grpo"]
    return Scorer(trained[-1]["policy_id"], trained[-1]["path"]) if trained else None


class RoundTables:
    """The run's tables as one round's steps see them: `difficulty` only for `policy_id`, on training questions."""

    def __init__(self, tables: RunTables, policy_id: str, held_out: set[str]):
        self._tables, self.policy_id, self.held_out = tables, policy_id, held_out

    def read(self, name: str) -> pa.Table:
        return self._scoped(name, self._tables.read(name))

    def inputs(self, spec: StageSpec) -> dict[str, pa.Table]:
        return {name: self._scoped(name, rows) for name, rows in self._tables.inputs(spec).items()}

    def apply(self, *args) -> None:
        self._tables.apply(*args)

    def _scoped(self, name: str, rows: pa.Table) -> pa.Table:
        if name != "difficulty":
            return rows
        mine = pc.equal(rows.column("policy_id"), self.policy_id)
        training = pc.invert(pc.is_in(rows.column("question_id"), value_set=pa.array(sorted(self.held_out), type=pa.string())))
        return rows.filter(pc.and_(mine, training))
