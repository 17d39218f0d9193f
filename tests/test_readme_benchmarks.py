"""README's train-step tables must say what the saved benchmark results say.

The train-step section of README copies numbers from `benchmarks/results/train_step*.md` (two runs
side by side as "a / b", or one run). A figure typed by hand can drift from its file; this test
reads both and fails on any cell that differs.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# README column -> column of the results file's summary table.
COLUMNS = {
    "JAX, per row": "JAX per row s / step",
    "JAX, per group": "JAX per group s / step",
    "torch": "torch s / step",
    "per row vs torch": "per row vs torch",
    "per group vs torch": "per group vs torch",
    "JAX per-row MFU": "JAX per-row MFU",
}
ALLOCATORS = {"glibc defaults": "system", "glibc_reuse": "glibc_reuse", "tcmalloc": "tcmalloc"}


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table_after(lines, start):
    """The first markdown table at or after line `start`: (header, rows)."""
    i = start
    while not lines[i].startswith("|"):
        i += 1
    header = _cells(lines[i])
    rows = []
    i += 2  # skip the |---| line
    while i < len(lines) and lines[i].startswith("|"):
        rows.append(_cells(lines[i]))
        i += 1
    return header, rows


def _summary(name):
    """{(config, allocator): {column: cell}} of a results file's summary table."""
    lines = (RESULTS / name).read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("## Summary"))
    header, rows = _table_after(lines, start)
    return {(r[0], r[1]): dict(zip(header, r)) for r in rows}


def _plain(cell):
    """'**1.01x / 1.05x**' -> ['1.01x', '1.05x']; '0.691 / 0.715 s' -> ['0.691', '0.715']."""
    cell = cell.replace("*", "").strip()
    cell = re.sub(r"\s*s$", "", cell)
    return [p.strip() for p in cell.split("/")]


def _readme_table(anchor):
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next((i for i, l in enumerate(lines) if anchor in l), None)
    assert start is not None, f"README no longer has the anchor {anchor!r}"
    header, rows = _table_after(lines, start)
    out = []
    config = None
    for r in rows:
        row = dict(zip(header, r))
        config = row["config"].split()[0]
        alloc_cell = row["allocator"].replace("`", "")
        alloc = next(v for k, v in ALLOCATORS.items() if alloc_cell.startswith(k))
        out.append((config, alloc, row))
    return header, out


@pytest.mark.parametrize(
    "anchor,files",
    [
        ("(`train_step_run1.md`, then `train_step.md`)", ["train_step_run1.md", "train_step.md"]),
        ("(`train_step_earlier.md`:", ["train_step_earlier.md"]),
    ],
)
def test_readme_train_step_tables_match_results(anchor, files):
    summaries = [_summary(f) for f in files]
    header, rows = _readme_table(anchor)
    assert len(rows) == 6, "expected tiny and small under three allocators"
    checked = 0
    for config, alloc, row in rows:
        for readme_col, file_col in COLUMNS.items():
            if readme_col not in header:
                continue
            values = _plain(row[readme_col])
            assert len(values) == len(files), (config, alloc, readme_col, row[readme_col])
            for value, summary in zip(values, summaries):
                assert value == summary[(config, alloc)][file_col], (
                    f"README {config}/{alloc}/{readme_col} says {value}, "
                    f"the results file says {summary[(config, alloc)][file_col]}"
                )
                checked += 1
    assert checked >= 6 * 5 * len(files)


def test_readme_tiny_r21_sentence_matches_results():
    summary = _summary("train_step_tiny_r21.md")
    readme = (ROOT / "README.md").read_text()
    m = re.search(
        r"`train_step_tiny_r21.md`\) gave (\S+) \(`glibc_reuse`\) and (\S+) \(tcmalloc\) per row,\s+"
        r"(\S+) / (\S+) per group",
        readme,
    )
    assert m, "README's sentence on the 21-round tiny run changed form"
    reuse, tc = summary[("tiny", "glibc_reuse")], summary[("tiny", "tcmalloc")]
    assert m.groups() == (
        reuse["per row vs torch"],
        tc["per row vs torch"],
        reuse["per group vs torch"],
        tc["per group vs torch"],
    )


def _matmul_totals(name):
    """(XLA s, torch s, NumPy s, XLA / torch) from the last row of a cpu_matmul results table."""
    row = next(
        l for l in (RESULTS / name).read_text().splitlines() if l.startswith("| **all of the above")
    )
    cells = _cells(row)
    return (*(c.removesuffix(" s") for c in cells[-4:-1]), cells[-1].replace("*", ""))


def test_readme_cpu_matmul_totals_match_results():
    readme = " ".join((ROOT / "README.md").read_text().split())
    earlier = re.search(
        r"\*\*(\S+) s for XLA against (\S+) s for torch \((\S+)\) and (\S+) s for NumPy", readme
    )
    current = re.search(
        r"\*\*XLA (\S+) s against torch (\S+) s \((\S+)\) and NumPy (\S+) s\*\*", readme
    )
    assert earlier and current, "README's matmul totals changed form"
    for m, name in ((earlier, "cpu_matmul_earlier.md"), (current, "cpu_matmul.md")):
        xla, torch, ratio, numpy = m.groups()
        assert (xla, torch, numpy, ratio) == _matmul_totals(name), name
