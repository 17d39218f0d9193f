"""Executes the notebooks in quick mode (PASSK_QUICK=1) so a broken notebook fails CI.

Each notebook runs in a kernel whose working directory is a fresh temporary directory, not the
repository: ``passk_jax`` can only come from the installed package, and a notebook that reached for
repository files (``experiments/``, a ``sys.path`` edit) would fail here.
"""

import json
import os
import pathlib
import time

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _execute(path, cwd, monkeypatch, **env):
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("PASSK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    t0 = time.time()
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb, time.time() - t0


def _text(nb):
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append(o.get("text", ""))
            out.append(json.dumps(o.get("data", {})))
    return "\n".join(out)


def test_notebooks_found():
    names = {p.name for p in NOTEBOOKS}
    assert {"toys.ipynb", "estimators_by_hand.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_paired_and_imports_only_the_package(path):
    nb = nbformat.read(path, as_version=4)
    # Stored with outputs stripped.
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert (
        "sys.path" not in code
        and "from experiments" not in code
        and "import experiments" not in code
    )
    # The .ipynb and its jupytext .py twin hold the same code.
    twin = jupytext.read(path.with_suffix(".py"))
    assert [c.source for c in twin.cells if c.cell_type == "code"] == [
        c.source for c in nb.cells if c.cell_type == "code"
    ]


# estimators_by_hand runs twice below (with and without widgets) instead of here.
@pytest.mark.parametrize(
    "path", [p for p in NOTEBOOKS if p.name != "estimators_by_hand.ipynb"], ids=lambda p: p.name
)
def test_notebook_executes_quick_outside_the_repository(path, tmp_path, monkeypatch):
    nb, seconds = _execute(path, tmp_path, monkeypatch)
    assert seconds < 120, "quick notebook should run in well under a minute"
    assert "quick mode: True" in _text(nb)


def test_estimators_notebook_without_widgets(tmp_path, monkeypatch):
    path = ROOT / "notebooks" / "estimators_by_hand.ipynb"
    nb, seconds = _execute(path, tmp_path, monkeypatch, PASSK_NO_WIDGETS="1")
    assert seconds < 120
    text = _text(nb)
    assert "widgets: False" in text and "widget-view" not in text
    assert "PKPO s_loo-1" in text and "unbiased maxg@4" in text  # the static call printed its table


def test_estimators_notebook_builds_widgets_when_available(tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    path = ROOT / "notebooks" / "estimators_by_hand.ipynb"
    nb, _ = _execute(path, tmp_path, monkeypatch)
    text = _text(nb)
    assert "widgets: True" in text and "application/vnd.jupyter.widget-view+json" in text
    assert os.environ.get("PASSK_NO_WIDGETS") is None
