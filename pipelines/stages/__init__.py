"""The stages, by name. One module each; the recipe key, the Prefect task name and the `stage` column agree."""

from pipelines.stage import StageSpec
from pipelines.stages.bridge_cot import bridge_cot
from pipelines.stages.caption import caption
from pipelines.stages.dedup import dedup
from pipelines.stages.difficulty import difficulty
from pipelines.stages.distill_cot import distill_cot
from pipelines.stages.grpo import grpo
from pipelines.stages.ingest import ingest
from pipelines.stages.mcts import mcts
from pipelines.stages.mixture import mixture
from pipelines.stages.rescore import rescore
from pipelines.stages.rollouts import rollouts
from pipelines.stages.select import select
from pipelines.stages.synthesize_qa import synthesize_qa
from pipelines.stages.verify import verify

STAGES: dict[str, StageSpec] = {
    s.name: s for s in (ingest, dedup, caption, synthesize_qa, distill_cot, bridge_cot, verify, rollouts, difficulty, select, mixture, grpo, rescore)
}
STAGES[mcts.name] = mcts
