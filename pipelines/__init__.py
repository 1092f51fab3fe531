"""The work: sources, stages, model engines, verification, rewards, policies. Pure over tables.

Nothing here opens the lake or imports `flows`: a stage receives Arrow tables and a `StageContext`,
and returns a `StageResult`.
"""
