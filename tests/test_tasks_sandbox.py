"""Hostile snippets against the sandbox: each must be contained, and the host left unharmed."""

import os
import socket
import textwrap
import uuid

import pytest

from passk_jax.tasks.sandbox import SandboxLimits, run_python

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox is POSIX-only")

FAST = SandboxLimits(timeout_s=5.0, cpu_s=3)


def _processes_of_uid(uid):
    """Pids of live (non-zombie) processes whose real uid is ``uid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            pids.append(int(entry))
    return pids


def test_plain_program_runs_with_minimal_environment():
    r = run_python("import os, sys\nprint('hello', sorted(os.environ))\nprint(os.getcwd())", FAST)
    assert r.returncode == 0 and not r.timed_out, r
    assert "hello" in r.stdout
    assert "['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE']" in r.stdout
    assert "passk_sbx_" in r.stdout  # cwd is the fresh temporary directory


def test_isolation_mechanisms_reported():
    r = run_python("pass", FAST)
    if os.geteuid() == 0:
        # Root here and in CI: the full mechanism is expected (fails loudly if it regresses).
        assert r.isolation == {"net": "netns", "fs": "mountns+uid", "pid": "pidns"}, r.isolation
        assert r.uid is not None and r.uid != 0
    assert set(r.isolation) == {"net", "fs", "pid"}


def test_infinite_loop_is_killed():
    r = run_python("while True:\n    pass\n", SandboxLimits(timeout_s=1.0, cpu_s=30))
    assert r.timed_out and r.returncode is None
    assert r.duration_s < 10
    r = run_python("while True:\n    pass\n", SandboxLimits(timeout_s=30.0, cpu_s=1))
    assert not r.timed_out and r.returncode != 0  # SIGXCPU / SIGKILL from RLIMIT_CPU
    assert r.duration_s < 10


def test_memory_bomb_fails():
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 * 1024))\n"
    r = run_python(code, SandboxLimits(timeout_s=10.0, memory_bytes=256 * 1024**2))
    assert r.returncode != 0 and "MemoryError" in r.stderr, r


def test_bounded_process_spawning_is_stopped_and_reaped():
    code = textwrap.dedent(
        """
        import os, time
        started = 0
        for _ in range(200):  # bounded: never more than 200 attempts
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            started += 1
        print("started", started, flush=True)
        """
    )
    r = run_python(code, SandboxLimits(timeout_s=10.0, nproc=16))
    assert r.returncode == 0, r
    started = int(r.stdout.split()[-1])
    assert started < 20  # RLIMIT_NPROC stopped it (16 processes of the sandbox uid)
    if r.uid is not None:
        assert _processes_of_uid(r.uid) == []  # every child was killed


def test_escaped_session_children_are_killed():
    # A child that calls setsid() leaves the process group; the PID namespace (or uid sweep) gets it.
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')\n"
    r = run_python(code, FAST)
    assert "parent done" in r.stdout
    if r.uid is not None:
        assert _processes_of_uid(r.uid) == []


def test_writes_outside_the_directory_fail(tmp_path):
    tag = uuid.uuid4().hex
    targets = [str(tmp_path / f"escape_{tag}")]
    r0 = run_python("pass", FAST)
    if r0.isolation["fs"].startswith("mountns"):
        # World-writable places are only protected by the read-only mount view.
        targets += [f"/tmp/passk_escape_{tag}", f"/dev/shm/passk_escape_{tag}"]
        targets.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), f"escape_{tag}"))
    code = textwrap.dedent(
        f"""
        import os
        for path in {targets!r}:
            try:
                with open(path, "w") as f:
                    f.write("pwned")
                print("WROTE", path)
            except OSError as e:
                print("blocked", path, type(e).__name__)
        with open("inside.txt", "w") as f:  # the work directory itself is writable
            f.write("ok")
        print("inside ok")
        """
    )
    r = run_python(code, FAST)
    assert "inside ok" in r.stdout, r
    assert "WROTE" not in r.stdout, r.stdout
    for path in targets:
        assert not os.path.exists(path), path


def test_network_connection_to_local_listener_fails():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        code = textwrap.dedent(
            f"""
            import socket
            try:
                s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
                s.sendall(b"leak")
                print("CONNECTED")
            except OSError as e:
                print("blocked", type(e).__name__, e)
            """
        )
        r = run_python(code, FAST)
        assert "CONNECTED" not in r.stdout and "blocked" in r.stdout, r
        server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            server.accept()  # the listener accepted nothing


def test_environment_secret_is_not_readable(monkeypatch):
    secret = "passk-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("PASSK_SANDBOX_TEST_SECRET", secret)
    code = textwrap.dedent(
        f"""
        import os
        print(dict(os.environ))
        for pid in ("self", "1", "{os.getpid()}", str(os.getppid())):
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    print(pid, f.read())
            except OSError as e:
                print(pid, "blocked", type(e).__name__)
        """
    )
    r = run_python(code, FAST)
    assert r.returncode == 0, r
    assert secret not in r.stdout and secret not in r.stderr


def test_output_is_capped():
    r = run_python(
        "import sys\nsys.stdout.write('x' * 10_000_000)\n", SandboxLimits(output_bytes=1000)
    )
    assert len(r.stdout) <= 1000
