"""README and config docstrings must say what the saved benchmark results say.

README copies numbers from `benchmarks/results/`: the train-step tables (two runs side by side as
"a / b", or one run), the CPU-matmul totals, and the planner's per-chip memory figures, which the
Gemma-2 configs' docstrings also state. A figure typed by hand can drift from its file; these tests
read both and fail on any figure that differs.
"""

import json
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


def _gb(name, index, field="total_bytes"):
    r = json.loads((RESULTS / name).read_text())["results"][index]
    return f"{r[field] / 1e9:.2f}"


# (README phrase with {} for the figure, results file, result index, byte field)
PLAN_FIGURES = [
    ("group of 16) needs **{} GB per chip**", "plan_2b_v5e_8x16.json", 0, "total_bytes"),
    ("4 sequences per chip do not fit ({} GB)", "plan_2b_v5e_8x16_search.json", 1, "total_bytes"),
    ("(1536 + 256, a prompt pass per row) **{} GB**", "plan_9b_v5e_8x16.json", 0, "total_bytes"),
    ("512 + 1024) **{} GB** with", "plan_27b_v5e_8x16.json", 0, "total_bytes"),
    ("does not fit 9B ({} GB)", "plan_9b_group_v5e_8x16.json", 0, "total_bytes"),
    ("(16 x 16) need {} / ", "plan_9b_sampler_v5e_8x16.json", 0, "total_bytes"),
    ("/ {} GB (9B)", "plan_9b_sampler_v5e_8x16.json", 1, "total_bytes"),
    ("GB (9B) and {} / ", "plan_27b_sampler_v5e_8x16.json", 0, "total_bytes"),
    ("/ {} GB (27B)", "plan_27b_sampler_v5e_8x16.json", 1, "total_bytes"),
    ("the 2B step needs {} GB of temporaries", "plan_2b_v5e_8x16_nolevers.json", 0, "temp_bytes"),
    ("**{} GB (prefill)", "plan_2b_sampler_v5e_8x16.json", 0, "total_bytes"),
    ("and {} GB (decode) per chip**", "plan_2b_sampler_v5e_8x16.json", 1, "total_bytes"),
]


@pytest.mark.parametrize("phrase,name,index,field", PLAN_FIGURES)
def test_readme_plan_figures_match_results(phrase, name, index, field):
    readme = " ".join((ROOT / "README.md").read_text().split())
    expected = phrase.format(_gb(name, index, field))
    assert expected in readme, f"README should say {expected!r} (from {name})"


def test_readme_9b_batch_search_matches_results():
    rows = json.loads((RESULTS / "plan_9b_v5e_8x16_search.json").read_text())["results"]
    by_batch = {r["batch"] // r["num_devices"]: f"{r['total_bytes'] / 1e9:.2f}" for r in rows}
    fits = " / ".join(by_batch[b] for b in (4, 8, 10, 12))
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"also fit ({fits} GB; 16 do not, {by_batch[16]} GB)" in readme


CONFIGS = ROOT / "experiments" / "configs"

# (config file, phrase with {} for the figure, results file, result index, byte field)
CONFIG_FIGURES = [
    (
        "gemma2_2b_math.py",
        "of 16 samples): {} GB per chip",
        "plan_2b_v5e_8x16.json",
        0,
        "total_bytes",
    ),
    ("gemma2_2b_math.py", "{} GB temporaries", "plan_2b_v5e_8x16.json", 0, "temp_bytes"),
    ("gemma2_2b_math.py", "do not ({} GB)", "plan_2b_v5e_8x16_search.json", 1, "total_bytes"),
    (
        "gemma2_2b_math.py",
        "needs {} GB (prefill)",
        "plan_2b_sampler_v5e_8x16.json",
        0,
        "total_bytes",
    ),
    ("gemma2_2b_math.py", "/ {} GB (decode)", "plan_2b_sampler_v5e_8x16.json", 1, "total_bytes"),
    ("gemma2_2b_math.py", "it plans at {} GB", "plan_27b_v5e_8x16.json", 0, "total_bytes"),
    ("gemma2_2b_math.py", "{} GB per chip at 2 sequences", "plan_2b_v5e4x4.json", 0, "total_bytes"),
    ("gemma2_2b_math.py", "{} GB at 4;", "plan_2b_v5e4x4.json", 1, "total_bytes"),
    ("gemma2_2b_math.py", "do not fit ({} GB)", "plan_2b_v5e4x4.json", 2, "total_bytes"),
    ("gemma2_2b_math.py", "rollout at {} / ", "plan_27b_sampler_v5e_8x16.json", 0, "total_bytes"),
    ("gemma2_9b_arc.py", "{} GB per chip (", "plan_9b_v5e_8x16.json", 0, "total_bytes"),
    ("gemma2_9b_arc.py", "would need {} GB", "plan_9b_group_v5e_8x16.json", 0, "total_bytes"),
    (
        "gemma2_9b_arc.py",
        "needs {} GB (prefill)",
        "plan_9b_sampler_v5e_8x16.json",
        0,
        "total_bytes",
    ),
    ("gemma2_9b_arc.py", "/ {} GB (decode)", "plan_9b_sampler_v5e_8x16.json", 1, "total_bytes"),
]


@pytest.mark.parametrize("config,phrase,name,index,field", CONFIG_FIGURES)
def test_config_docstring_plan_figures_match_results(config, phrase, name, index, field):
    text = " ".join((CONFIGS / config).read_text().split())
    expected = phrase.format(_gb(name, index, field))
    assert expected in text, f"{config} should say {expected!r} (from {name})"


def test_readme_v5e_4x4_figures_match_results():
    rows = json.loads((RESULTS / "plan_2b_v5e4x4.json").read_text())["results"]
    gb = {r["batch"] // r["num_devices"]: f"{r['total_bytes'] / 1e9:.2f}" for r in rows}
    fits = {r["batch"] // r["num_devices"]: r["fits"] for r in rows}
    assert fits == {2: True, 4: True, 5: False, 6: False}
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (
        f"per chip need **{gb[2]} GB per chip**, 4 sequences {gb[4]} GB, 5 do not fit ({gb[5]} GB), "
        f"6 neither ({gb[6]} GB)" in readme
    )
    plan = (RESULTS / "plan.md").read_text()
    for b in (2, 4, 5, 6):
        assert f"| {gb[b]} GB |" in plan or f"| **{gb[b]} GB** |" in plan, b
