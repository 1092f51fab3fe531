"""`build-vision-r1-cold` end to end: cold-start SFT rows exist only for chains whose answers verify."""

import pytest

from flows.recipe_flow import run
from stores.lake import Lake, dataset_root

pytestmark = pytest.mark.slow


def test_sft_rows_only_for_verified_chains(tmp_path):
    # A reasoner wrong 40 % of the time, so some bridged chains must fail verification.
    summary = run("build-vision-r1-cold", ["source.synthetic.scenes=12", "synthesize_qa.detail_rounds=0",
                                           "models.reasoner={engine: scripted, model: sloppy-reasoner, noise: {wrong_answer: 0.4}}"],
                  home=tmp_path)
    assert summary["version"] == 1
    with Lake.open(dataset_root(tmp_path, "vision-r1-cold"), read_only=True) as lake:
        chains = lake.sql("""SELECT c.cot_id, c.final_answer, q.answer, v.passed, c.reflections FROM cots c
                             JOIN questions q USING (question_id) LEFT JOIN verdicts v ON v.subject_id = c.cot_id
                             WHERE c.kind = 'bridged'""").to_pylist()
        sft = {r["cot_id"] for r in lake.sql("SELECT cot_id FROM sft_examples WHERE cot_kind = 'bridged'").to_pylist()}
        rejected = lake.sql("SELECT count(*) AS n FROM rejects WHERE reason = 'verify.wrong_answer'").to_pylist()[0]["n"]
    passed = {c["cot_id"] for c in chains if c["passed"]}
    assert sft == passed and sft, "the SFT view holds exactly the verified chains"
    failed = [c for c in chains if c["cot_id"] not in sft]
    assert failed and rejected == len(failed), "some chains were wrong and each is a verify reject"
    assert all(c["final_answer"] != c["answer"] for c in failed)
    assert all(c["reflections"] >= 1 for c in chains)  # long, self-reflective chains
    steps = {s["stage"]: s for s in summary["steps"]}
    assert steps["verify"]["n_out"] == len(sft)
