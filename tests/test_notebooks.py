"""The chapter notebooks: each one runs top to bottom, and none is committed with outputs.

Decision (docs/notebooks.md): notebooks are committed with their outputs stripped (no
outputs, no execution counts), so that diffs show only what a person wrote and the
repository stays small; learners run them to see the pictures. ``test_committed_without_outputs``
keeps it that way.

Each notebook runs in a fresh Jupyter kernel (nbclient, which comes with nbmake), in an empty
temporary notebooks/ folder (see ``kernel_cwd``), with this checkout first on ``PYTHONPATH`` (so
the kernel imports the code under test even if another copy of minissd is installed), and
``MINISSD_DATA`` pointing at one temporary folder for the whole session: chapter 7 writes the
tiny-voc subset and a checkpoint there; chapters 8, 9 and 10 load the shipped trained detector
(minissd.pretrained) and share one copy of tiny-voc's 400 validation images written there by
the first of them. ``MINISSD_CHECKPOINT`` is removed, so they always test the shipped one.
"""

import json
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 300  # seconds; the longest cell is chapter 7's training loop (about a minute)
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def test_there_is_a_notebook_per_chapter():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == [f"{k:02d}" for k in range(1, 12)], numbers


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name}: no code cells"
    for k, cell in enumerate(code):
        assert cell.get("outputs") == [], f"{path.name}: code cell {k} has outputs; clear them before committing"
        assert cell.get("execution_count") is None, f"{path.name}: code cell {k} has an execution count"
    source = "".join("".join(c["source"]) for c in code)
    assert "import minissd" in source or "from minissd" in source, f"{path.name}: does not use minissd"
    markdown = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "## Try this" in markdown, f"{path.name}: no 'Try this' exercise for the student"


@pytest.fixture(scope="session")
def notebook_env(tmp_path_factory):
    """What the kernels need: this checkout importable first, one data folder per session, and
    one thread for Numba and BLAS. The notebooks are checked for running, not for speed, and
    one thread keeps their time steady whatever else the machine runs: on a loaded 2-core
    machine, 2 threads (Numba's OpenMP layer + OpenBLAS, both spinning while they wait) made
    chapter 4 seven times slower than 1 thread (93 s against 13 s)."""
    path = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env = {"PYTHONPATH": path, "MINISSD_DATA": str(tmp_path_factory.mktemp("minissd-data"))}
    env.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    return env


@pytest.fixture(scope="session")
def kernel_cwd(tmp_path_factory):
    """An empty notebooks/ folder to run in, so that nothing of a developer's checkout (a
    ../runs/ folder) is picked up."""
    folder = tmp_path_factory.mktemp("checkout") / "notebooks"
    folder.mkdir()
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, notebook_env, kernel_cwd, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key, value in notebook_env.items():  # the kernel inherits this process's environment
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders figures
    monkeypatch.delenv("MINISSD_CHECKPOINT", raising=False)  # chapters 8-10: the shipped detector
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(kernel_cwd)}})
    start = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError with the cell and its traceback on failure
    finally:
        nbformat.write(nb, tmp_path / path.name)  # the executed copy, outputs included, to inspect
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
