"""Executes the notebooks in quick mode (PASSK_QUICK=1) so a broken notebook fails CI."""

import os
import pathlib
import time

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_found():
    assert NOTEBOOKS, "no notebooks under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_quick(path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    # Stored with outputs stripped.
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path
    monkeypatch.setenv("PASSK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    t0 = time.time()
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    assert time.time() - t0 < 120, "quick notebook should run in well under a minute"
    assert os.environ["PASSK_QUICK"] == "1"
