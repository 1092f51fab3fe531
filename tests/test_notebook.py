"""notebooks/explore.ipynb runs top to bottom, in a kernel of this venv, on a version the session built.

The test executes a copy of the committed notebook with nbclient (the file itself is committed
without outputs), pointed at version 1 of the session's `wethink` dataset through the environment
variables its parameters cell reads, and checks what it computed against the lake.
"""

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from stores.lake import Lake

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "explore.ipynb"

# Appended to the executed copy only: what the notebook computed, and which python ran it.
REPORT = """
import json, sys
print(json.dumps({"python": sys.executable, "version": int(VERSION), "sizes": dict(zip(sizes["table"], sizes["rows"])),
                  "stages": stages["stage"].to_list(), "n_verdicts": int(verification["n"].sum()),
                  "n_difficulty": difficulty.height, "n_hardest": hardest.height}))
"""


def test_the_notebook_is_committed_without_outputs_and_takes_its_dataset_from_the_environment():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    parameters = next(cell for cell in code if "parameters" in cell.metadata.get("tags", []))
    assert all(name in parameters.source for name in ("THINKMILL_HOME", "THINKMILL_DATASET", "THINKMILL_VERSION"))


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_on_a_built_version(built, monkeypatch):
    monkeypatch.setenv("THINKMILL_HOME", str(built["home"]))
    monkeypatch.setenv("THINKMILL_DATASET", "wethink")
    monkeypatch.setenv("THINKMILL_VERSION", "1")  # not the latest (2): the notebook time-travels
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT.strip()))
    # As Jupyter does: the kernel starts in notebooks/, and "python3" is this interpreter.
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    plots = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(plots) == 3  # verification, difficulty, the hardest questions with their images
    facts = json.loads(notebook.cells[-1].outputs[-1].text)
    assert facts["python"] == sys.executable and facts["version"] == 1

    with Lake.open(built["root"], read_only=True) as lake:
        for table, rows in facts["sizes"].items():
            assert rows == lake.table(table, version=1).num_rows, table
        run_id = next(v["run_id"] for v in lake.versions() if v["version"] == 1)
        stages = lake.sql(f"SELECT stage FROM stage_stats WHERE run_id = '{run_id}' ORDER BY step_index").to_pylist()
        assert facts["stages"] == [s["stage"] for s in stages] and len(stages) == 12
        assert facts["n_verdicts"] == lake.table("verdicts", version=1).num_rows > 0
        n_difficulty = lake.sql("SELECT count(*) AS n FROM difficulty AT (VERSION => 1) "
                                "WHERE method = 'group_stats' AND pass_rate IS NOT NULL").to_pylist()[0]["n"]
        assert facts["n_difficulty"] == n_difficulty > 0
    assert facts["n_hardest"] == 4
