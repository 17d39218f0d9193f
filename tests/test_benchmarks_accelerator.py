"""The accelerator benchmark's code path, on CPU with the tiny model (the figures are not checked)."""

import json
import sys


def test_accelerator_benchmark_smoke(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend("benchmarks")
    sys.modules.pop("accelerator", None)
    import accelerator

    out = tmp_path / "gpu.md"
    rc = accelerator.main(
        [
            "--model", "tiny", "--prompt-len", "8", "--completion-len", "8", "--max-batch", "8",
            "--repeats", "1", "--sampler-prompts", "2", "--sampler-samples", "2", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    text = out.read_text()
    assert "| 8 |" in text and "tokens / s" in text and "Sampler:" in text
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    assert [r[0] for r in rows] == [8] and all(r[1] > 0 for r in rows)
