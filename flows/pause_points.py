"""Pause points: a test instrument that holds a run at a named point, so a test can kill it exactly there.

    THINKMILL_TEST_PAUSE_AT=commit THINKMILL_TEST_PAUSE_DIR=/tmp/pause flow run build-wethink

At a point named in `THINKMILL_TEST_PAUSE_AT` (comma-separated), the process writes
`<THINKMILL_TEST_PAUSE_DIR>/<point>.reached` (holding its pid) and waits until
`<point>.go` appears in that folder; then it goes on, and passes that point freely from then on. A
test waits for `.reached`, then SIGKILLs the process (crash safety) or lets another writer commit
first (concurrent writers) and touches `.go`. Points (a ':' in a name becomes '-' in file names):

- `shard:<stage>`: a shard of `<stage>` has computed its result and not yet staged it.
- `commit`: inside the lake's commit transaction, every table written, before COMMIT.
- `committed`: the snapshot is committed; the run has not reported yet.

Not for production: unset, `pause_at` returns at once. It holds the process (or thread) that reaches
the point: with `--runner ray`, a shard point holds the Ray worker running that shard (workers get
the driver's THINKMILL_* variables), and `.reached` holds that worker's pid.
"""

import os
import time
from pathlib import Path


def pause_at(point: str) -> None:
    """Hold here if the environment names `point`; return at once otherwise."""
    wanted = os.environ.get("THINKMILL_TEST_PAUSE_AT")
    if not wanted or point not in {p.strip() for p in wanted.split(",")}:
        return
    folder = Path(os.environ.get("THINKMILL_TEST_PAUSE_DIR") or ".")
    name = point.replace(":", "-")
    go = folder / f"{name}.go"
    if go.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    reached = folder / f"{name}.reached"
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, reached)  # whole or absent: the test reads the pid
    while not go.exists():
        time.sleep(0.02)
