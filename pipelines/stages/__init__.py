"""The stages, by name. One module each; the recipe key, the Prefect task name and the `stage` column agree."""

from pipelines.stage import StageSpec
from pipelines.stages.bridge_cot import bridge_cot
from pipelines.stages.caption import caption
from pipelines.stages.dedup import dedup
from pipelines.stages.difficulty import difficulty
from pipelines.stages.distill_cot import distill_cot
from pipelines.stages.grpo import grpo
from pipelines.stages.holdout import holdout
from pipelines.stages.ingest import ingest
from pipelines.stages.mcts import mcts
from pipelines.stages.mixture import mixture
from pipelines.stages.modomodo import modomodo
from pipelines.stages.rap import rap
from pipelines.stages.rescore import rescore
from pipelines.stages.rollouts import rollouts
from pipelines.stages.select import select
from pipelines.stages.sft import sft
from pipelines.stages.synthesize_qa import synthesize_qa
from pipelines.stages.verify import verify

# In the order a sample meets them: build, score, select, mix, train, re-score.
STAGES: dict[str, StageSpec] = {
    s.name: s for s in (ingest, dedup, caption, synthesize_qa, distill_cot, bridge_cot, verify, holdout, rollouts,
                        difficulty, mcts, rap, select, mixture, modomodo, sft, grpo, rescore)
}
