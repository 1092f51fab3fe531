"""The loop's parts on their own, without a flow: the holdout split, rescore's subsets, the round view
of the tables, the per-round maths, and recipe validation of `loop:` and `rounds`."""

import doctest
import importlib

import pyarrow as pa
import pytest

from flows.loop import RoundTables
from flows.recipes import load_recipe
from flows.run_tables import RunTables
from pipelines.round_stats import round_shift
from pipelines.stages.holdout import holdout, is_held_out
from pipelines.stages.rescore import subset_ids
from schemas import TABLES
from schemas.errors import RecipeError
from tests.stages.fixtures import context


@pytest.mark.parametrize("module", ["pipelines.round_stats", "pipelines.stages.holdout"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def questions(ids) -> pa.Table:
    return pa.table({"question_id": pa.array(list(ids), type=pa.string())})


def splits(ctx, rows) -> pa.Table:
    return ctx.rows("splits", [{"split_id": f"split-{q}", "question_id": q, "split": s, "held_out_share": 0.5, "seed": 0} for q, s in rows])


def test_holdout_keeps_every_question_and_sets_a_seeded_share_aside(tmp_path):
    ctx = context("holdout", tmp_path)
    ids = [f"question-{i}" for i in range(400)]
    result = holdout(questions(ids), ctx.empty("splits"), ctx, held_out_share=0.25)
    rows = result.out.to_pylist()
    assert [r["question_id"] for r in rows] == ids and result.rejects.num_rows == 0  # kept, all of them
    held = [r["question_id"] for r in rows if r["split"] == "held_out"]
    assert 70 < len(held) < 130 and held == [q for q in ids if is_held_out(q, share=0.25, seed=0)]
    more = holdout(questions(ids + ["question-new"]), ctx.empty("splits"), ctx, held_out_share=0.25)
    assert [r for r in more.out.to_pylist() if r["question_id"] != "question-new"] == rows  # adding never moves one
    other_seed = holdout(questions(ids), ctx.empty("splits"), context("holdout", tmp_path, seed=1), held_out_share=0.25)
    assert [r["split"] for r in other_seed.out.to_pylist()] != [r["split"] for r in rows]


def test_a_committed_split_wins_over_a_changed_share(tmp_path):
    ctx = context("holdout", tmp_path)
    before = splits(ctx, [("q1", "held_out"), ("q2", "train")])
    result = holdout(questions(["q1", "q2", "q3"]), before, ctx, held_out_share=0.0)
    got = {r["question_id"]: (r["split"], r["held_out_share"]) for r in result.out.to_pylist()}
    assert got == {"q1": ("held_out", 0.5), "q2": ("train", 0.5), "q3": ("train", 0.0)}
    with pytest.raises(ValueError, match="between 0 and 1"):
        holdout(questions(["q1"]), before, ctx, held_out_share=1.5)


def test_rescore_subsets_always_include_held_out_questions(tmp_path):
    ctx = context("rescore", tmp_path)
    asked = pa.table({"question_id": ["q1", "q2", "q3", "q4"], "category": ["counting", "counting", "bar_chart", "relations"]})
    difficulty = pa.table({"question_id": ["q1", "q2", "q3"], "selected": [True, False, None]})
    held = splits(ctx, [("q4", "held_out"), ("q1", "train")])
    assert subset_ids(asked, difficulty, held, "all") == {"q1", "q2", "q3", "q4"}
    assert subset_ids(asked, difficulty, held, "selected") == {"q1", "q4"}
    assert subset_ids(asked, difficulty, held, "category = 'counting'") == {"q1", "q2", "q4"}
    with pytest.raises(ValueError, match="Columns: question_id, category"):
        subset_ids(asked, difficulty, held, "categroy = 'counting'")


def test_a_round_sees_only_its_policy_rows_on_training_questions(tmp_path):
    ctx = context("difficulty", tmp_path)
    rows = [{"difficulty_id": f"d-{q}-{p}", "question_id": q, "policy_id": p, "method": "group_stats", "pass_rate": 0.5}
            for q in ("q1", "q2", "q3") for p in ("base", "round-1")]
    tables = RunTables(lambda name: TABLES[name].schema.empty_table())
    tables.put("difficulty", ctx.rows("difficulty", rows))
    view = RoundTables(tables, "round-1", held_out={"q3"})
    seen = view.read("difficulty").to_pylist()
    assert {(r["question_id"], r["policy_id"]) for r in seen} == {("q1", "round-1"), ("q2", "round-1")}
    assert view.read("questions").num_rows == 0 and tables.read("difficulty").num_rows == 6  # other tables, and the run's, untouched


def test_round_shift_with_nothing_in_common():
    shift = round_shift({"a": 0.5}, {"b": 1.0})
    assert shift["n_paired"] == 0 and shift["pass_rate_shift"] is None and shift["histogram"] == [0] * 6


def test_rounds_is_a_top_level_key_and_loop_steps_take_overrides():
    recipe = load_recipe("loop-grpo", ["rounds=2", "grpo.max_steps=3", "select.rule=easyr1"])
    assert recipe.rounds == 2 and [s.stage for s in recipe.loop] == ["select", "mixture", "grpo", "rescore"]
    loop = {s.stage: s.params for s in recipe.loop}
    assert loop["grpo"]["max_steps"] == 3 and loop["select"]["rule"] == "easyr1" and loop["rescore"]["subset"] == "all"
    assert [s.index for s in recipe.loop] == list(range(len(recipe.steps), len(recipe.steps) + 4))
    assert recipe.config_hash != load_recipe("loop-grpo", ["rounds=3"]).config_hash
    assert "loop" not in load_recipe("build-wethink").resolved()  # recipes without a loop keep their config hash


def write(tmp_path, text: str):
    path = tmp_path / "r.yaml"
    path.write_text("dataset: d\nsteps:\n  - ingest\n" + text)
    return str(path)


@pytest.mark.parametrize("text, message", [
    ("rounds: 2\n", "no `loop:` block"),
    ("loop:\n  - select\n  - rescore\n", "no grpo step"),
    ("loop:\n  - rescore\n  - grpo\n", "no rescore step after grpo"),
    ("rounds: -1\nloop:\n  - grpo\n  - rescore\n", "not a whole number"),
    ("rounds: two\nloop:\n  - grpo\n  - rescore\n", "not a whole number"),
    ("loop:\n  - grpoo\n  - rescore\n", "loop step 1: unknown stage 'grpoo'"),
    ("loop: []\n", "expected a list of steps"),
])
def test_loop_mistakes_are_reported_with_what_to_do(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, text))


def test_set_rounds_on_a_recipe_without_a_loop_is_refused():
    with pytest.raises(RecipeError, match="no `loop:` block"):
        load_recipe("build-wethink", ["rounds=2"])


def test_a_video_is_exported_as_the_contact_sheet_the_policy_sees(tmp_path):
    import io

    from PIL import Image

    from pipelines.visuals import Visuals
    from stores.exports.trainers import exported_image
    from tests.stages.fixtures import ingest_clips, items_of

    assets = ingest_clips(tmp_path, clips=1)
    visuals = Visuals.of(assets.to_pylist())
    (video,) = items_of(assets)
    exported = exported_image(video, visuals, tmp_path)
    sheet = Image.open(io.BytesIO(exported.data))
    expected = visuals.policy_image(video, lambda uri: tmp_path / uri)
    assert exported.name.endswith(".png") and sheet.size == expected.size
    assert list(sheet.convert("RGB").getdata()) == list(expected.getdata())


def test_a_round_that_trains_nothing_ends_the_loop_with_a_note(tmp_path):
    """`run_rounds` driving the real select, mixture, grpo and rescore stages (no Prefect): `grpo.max_items=0`
    trains nothing, so rescore has no policy, and rounds 2 and 3 never start."""
    from flows.loop import run_rounds
    from pipelines.engines import EngineRegistry
    from pipelines.stage import StageContext, account, kept_ids
    from pipelines.stages import STAGES
    from pipelines.stages.rollouts import policy_id_of
    from tests.stages.fixtures import scripted

    registry = EngineRegistry({"policy": scripted("start-policy"), "judge": scripted()}, home=tmp_path)
    start = policy_id_of(registry.engine("policy"))
    ctx = context("fixture", tmp_path)
    ids = ["q1", "q2", "q3", "q4"]
    tables = RunTables(lambda name: TABLES[name].schema.empty_table())
    tables.put("questions", ctx.rows("questions", [
        {"question_id": q, "asset_ids": ["a"], "question": "How many?", "answer": "2", "answer_type": "num", "choices": [],
         "category": "counting", "abilities": ["counting"], "reward_route": "rule", "generator": "hand"} for q in ids]))
    tables.put("splits", splits(ctx, [("q1", "train"), ("q2", "train"), ("q3", "train"), ("q4", "held_out")]))
    tables.put("difficulty", ctx.rows("difficulty", [
        {"difficulty_id": f"d-{q}-{p}", "question_id": q, "policy_id": p, "method": "group_stats", "pass_rate": 0.5, "reward_std": 0.5}
        for q in ids for p in (start, "some-other-policy")]))
    recipe = load_recipe("loop-grpo", ["rounds=3", "grpo.max_items=0"])
    counted = []

    def run_step(step, view, engines):  # what recipe_flow._run_step does, minus Prefect, shards and staging
        spec = STAGES[step.stage]
        inputs = view.inputs(spec)
        step_ctx = StageContext(run_id="run", stage=spec.name, stage_version=spec.version, config_hash="c", root=tmp_path, engines=engines)
        result = spec(*[inputs[name] for name in spec.reads], step_ctx, **step.params)
        counts = account(spec, inputs[spec.subject], result)
        view.apply(spec, result.out, result.rejects, result.side, kept_ids(spec, inputs[spec.subject], result))
        counted.append((spec.name, counts.n_in, counts.by_reason))
        return {"row": {"stage": spec.name, "step_index": step.index, "n_in": counts.n_in, "n_out": counts.n_out}, "summary": {}}

    results, rounds = run_rounds(recipe, run_step, tables, registry, run_id="run")
    (only,) = rounds.to_pylist()
    assert only["round"] == 1 and only["scored_by"] == start and only["policy_id"] is None and "later rounds skipped" in only["note"]
    assert only["n_candidates"] == 3 and only["n_held_out"] == 1  # the start policy's rows on training questions only
    assert [name for name, *_ in counted] == ["select", "mixture", "grpo", "rescore"] and len(results) == 4
    assert counted[0][1] == 3 and counted[2][2] == {"grpo.over_max_items": 3}
    assert counted[3][2] == {"rescore.no_policy": 4}  # every question accounted for, held-out one included
