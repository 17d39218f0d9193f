"""passk_jax.hostmem: when the entry points re-execute with glibc tunables, and that they do."""

import os
import platform
import subprocess
import sys

import pytest

from passk_jax import hostmem

GLIBC = platform.libc_ver()[0] == "glibc"


def test_wanted_only_on_cpu_hosts_without_user_tunables_or_opt_out():
    base = {"JAX_PLATFORMS": "cpu"}
    assert hostmem.wanted(base) == GLIBC
    assert not hostmem.wanted({**base, hostmem.ENV: "0"})
    assert not hostmem.wanted({**base, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    assert not hostmem.wanted({"JAX_PLATFORMS": "cuda"})
    assert not hostmem.wanted({"JAX_PLATFORMS": "cpu,tpu"})
    assert hostmem.cpu_only_host({"JAX_PLATFORMS": " cpu "})


def _run(script, env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostmem.ENV)}
    env.update({"JAX_PLATFORMS": "cpu", **env_extra})
    proc = subprocess.run(
        [sys.executable, str(script), "an-arg"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_reexec_restarts_once_with_the_tunables_and_the_same_arguments(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, sys\n"
        "from passk_jax import hostmem\n"
        "print('start', os.getpid(), flush=True)\n"
        "hostmem.reexec_with_tunables()\n"
        "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1])\n"
    )
    out = _run(script, {})
    # Started twice in one process (same pid), the second time with the tunables, args kept.
    assert out[0] == out[2] == "start" and out[1] == out[3], out
    assert out[4:] == [hostmem.TUNABLES, "an-arg"]
    out = _run(script, {hostmem.ENV: "0"})
    assert out[0] == "start" and out[2:] == ["None", "an-arg"]


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_training_entry_point_runs_under_the_tunables(tmp_path):
    """`python -m passk_jax.main` re-executes before JAX starts; the config help still works."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostmem.ENV)}
    env["JAX_PLATFORMS"] = "cpu"
    code = (
        "import os, runpy, sys\n"
        "sys.argv = ['passk_jax.main', '--config', 'maze_tiny', '--help']\n"
        "print('tunables:', os.environ.get('GLIBC_TUNABLES'), flush=True)\n"
        "runpy.run_module('passk_jax.main', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("tunables:")]
    assert lines == ["tunables: None", f"tunables: {hostmem.TUNABLES}"], proc.stdout[:500]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "maze_tiny" in proc.stdout + proc.stderr  # the config's help, from the re-executed run
