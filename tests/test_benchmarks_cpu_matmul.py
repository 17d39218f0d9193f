"""``benchmarks/cpu_matmul.py`` times the matmuls the per-row train step actually runs."""

from passk_jax import flops as FL


def test_step_matmuls_add_up_to_the_step_flops_less_attention(monkeypatch):
    monkeypatch.syspath_prepend("benchmarks")
    import cpu_matmul

    cfg = cpu_matmul.small_config()
    b, tp, t = 128, 32, 64
    rows = cpu_matmul.step_matmuls(cfg, b, tp, t)
    total = sum(2.0 * m * k * n * count for _, _, m, k, n, count in rows)
    # The step's model FLOPs (completion positions unembedded) minus the attention's score and
    # value products, which the benchmark leaves out: forward + 2x backward.
    attention = 3 * cfg.num_layers * b * (tp + t) * 2 * 2 * cfg.num_heads * cfg.head_dim * (tp + t)
    assert total == FL.train_step_flops(cfg, b, tp, t, unembed_all=False) - attention
    assert {form for _, form, *_ in rows} == {"NN", "NT", "TN"}


def test_cpu_model_reads_cpuinfo_and_falls_back(monkeypatch, tmp_path):
    import builtins
    import platform

    from passk_jax import testing

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU 9000 @ 2.60GHz\n")
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        return real_open(info if path == "/proc/cpuinfo" else path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert testing.cpu_model() == "Example CPU 9000 @ 2.60GHz"

    def no_cpuinfo(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            raise OSError("no such file")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    assert testing.cpu_model() == (platform.processor() or platform.machine())
