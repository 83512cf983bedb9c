"""derive in Jupyter, as a researcher uses it: a notebook run by a real kernel (nbclient)
shows every result as LaTeX that fits a column, substitutes derive's own K, and turns
closed forms into floats and NumPy functions."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

#: End-to-end: run with `pytest -m slow` (and by .ci/run).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

CELLS = [
    "import numpy, derive\na = derive.variance('he', 'relu', 'pre')\na",
    "derive.paths(3, 'x', block='post')",
    "g = derive.path_gradients(54, block='pre', init='he')\ng",
    "a.forward.derivation",
    "print(a.forward.closed_form.rhs.subs(derive.K, 10))\n"
    "print(a.forward.closed_form.rhs.subs(a.forward.symbols['K'], 10))\n"
    "print(a.forward.array(3).tolist())\n"
    "print(derive.variance('he', 'relu').forward.function()(numpy.arange(4), 2.0).tolist())\n"
    "print(len(derive.render(g, 'latex')) > 0, len(derive.render(derive.paths(2, 'x', "
    "block='pre'), 'text')) > 0)",
]


def _modules() -> tuple:
    try:
        import ipykernel  # noqa: F401
        import nbclient
        import nbformat
    except ImportError as missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install the test extra: {missing}")
        pytest.skip(f"{missing}")
    return nbclient, nbformat


def test_a_notebook_shows_results_as_latex_and_numbers(tmp_path, monkeypatch):
    nbclient, nbformat = _modules()
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("DERIVE_CACHE_DIR", "")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [cell.outputs for cell in notebook.cells]
    for number in range(4):  # every result object displays as LaTeX
        shown = [o for o in outputs[number] if o.get("output_type") == "execute_result"]
        assert shown and "text/latex" in shown[0]["data"], number
        latex = shown[0]["data"]["text/latex"]
        assert latex.startswith("$") and latex.endswith("$"), number
        # fits a column: no \text{} longer than a line, no row of more than 200 characters
        for text in re.findall(r"\\text\{([^}]*)\}", latex):
            assert len(text) <= 75, text
        for row in latex.split("\\\\"):
            assert len(row) <= 200, row
    printed = "".join(o.get("text", "") for o in outputs[4]).splitlines()
    # independent values: pre-LN, He, ReLU: q_K = K + q_0; no norm: q_K = 2^K q_0
    assert printed[0] == printed[1] == "q_0 + 10"
    assert printed[2] == "[1.0, 2.0, 3.0, 4.0]"
    assert printed[3] == str([2.0 * 2**K for K in range(4)])
    assert printed[4] == "True True"
