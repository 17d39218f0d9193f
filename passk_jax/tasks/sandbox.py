"""Run untrusted Python code (model completions) in a separate, resource-limited, isolated process.

:func:`run_python` writes the program into a fresh temporary directory and starts
``python -I -S -c LAUNCHER`` with a minimal environment (``PATH``, ``LANG``, ``HOME`` = the work
directory; nothing inherited), stdin closed, stdout / stderr going to files that the parent owns, and
its own session (process group). The launcher is trusted code that, before it runs the program:

1. **Network**: ``unshare(CLONE_NEWNET)``: a new network namespace with only a loopback interface
   that is down, so no address (127.0.0.1 included) is reachable. Needs root (``CAP_SYS_ADMIN``); as
   a non-root user it tries ``CLONE_NEWUSER | CLONE_NEWNET``. If both fail, a prelude replaces
   ``socket.socket`` and friends with functions that raise: weaker, since code could reach the
   C library through ``ctypes``. ``SandboxResult.isolation["net"]`` says which applied.
2. **Filesystem**: ``unshare(CLONE_NEWNS)``, all mounts made private, the work directory bind-mounted
   read-write and then every other mount re-mounted read-only, so nothing outside the work directory
   (``/tmp``, ``/dev/shm`` and the project included) can be written. On top of that, when running as
   root, the program runs under a separate unprivileged uid/gid (a high, per-call uid, no
   supplementary groups), so root-only files cannot be read and capabilities are gone. Without a mount
   namespace only the uid drop remains (world-writable places such as ``/tmp`` stay writable).
3. **Processes**: ``unshare(CLONE_NEWPID)`` and a fork: the program runs as PID 1 of a new PID
   namespace with a fresh ``/proc`` (other processes and their ``environ`` are invisible), and with
   ``PR_SET_PDEATHSIG = SIGKILL``; when the launcher dies (wall-clock kill of its process group) the
   namespace's init dies and the kernel kills every process left in it, even ones that called
   ``setsid``. Without a PID namespace the parent kills the process group and, if a uid was
   dropped, every process of that uid.
4. **Limits** (``resource.setrlimit``): ``RLIMIT_CPU`` (CPU seconds), ``RLIMIT_AS`` (address space),
   ``RLIMIT_FSIZE`` (largest file written, stdout / stderr included), ``RLIMIT_NPROC`` (processes of the
   sandbox uid; effective because the uid is unprivileged and not shared), ``RLIMIT_NOFILE``,
   ``RLIMIT_CORE = 0``; plus a wall-clock timeout enforced by the parent.

When root, the interpreter must be reachable by the unprivileged uid: the running interpreter is used
if every directory on its path is world-searchable, else the first such one of ``/usr/bin/python3``,
``/usr/local/bin/python3`` (stdlib only; the program needs nothing else).

Limits of this design: no seccomp syscall filter; ``/proc`` and ``/sys`` of the host kernel remain
readable where the PID namespace is unavailable; CPU time of threads is capped only by
``RLIMIT_CPU`` and the wall clock. Isolation is best effort outside Linux.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

__all__ = ["SandboxLimits", "SandboxResult", "pick_interpreter", "run_python"]


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run.

    Attributes:
      timeout_s: wall-clock limit (the whole process tree is killed after it).
      cpu_s: ``RLIMIT_CPU`` seconds (SIGXCPU, then SIGKILL one second later).
      memory_bytes: ``RLIMIT_AS`` address-space limit.
      file_bytes: ``RLIMIT_FSIZE``: the largest file the program may write.
      nproc: ``RLIMIT_NPROC``: processes (threads count too) of the sandbox uid.
      nofile: ``RLIMIT_NOFILE``: open file descriptors.
      output_bytes: at most this much of stdout and of stderr is read back.
    """

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 512 * 1024**2
    file_bytes: int = 16 * 1024**2
    nproc: int = 32
    nofile: int = 64
    output_bytes: int = 64 * 1024


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """What came back from one sandboxed run.

    Attributes:
      returncode: exit status of the program (``128 + signal`` when killed by a signal), or ``None``
        if the wall-clock timeout fired.
      stdout, stderr: decoded (UTF-8, replacement characters) and truncated output.
      timed_out: whether the wall-clock timeout fired.
      duration_s: wall-clock seconds.
      uid: the uid the program ran under (``None`` if no uid was dropped).
      isolation: which mechanism applied: ``{"net": "netns" | "socket-prelude", "fs": "mountns+uid"
        | "mountns" | "uid" | "none", "pid": "pidns" | "pgid"}``.
    """

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    uid: int | None
    isolation: dict[str, str]


_SOCKET_PRELUDE = """\
def __passk_block_network():
    import socket as _socket_mod
    def _blocked(*args, **kwargs):
        raise OSError("network access is disabled in the sandbox")
    for _name in ("socket", "create_connection", "create_server", "socketpair", "fromfd",
                  "getaddrinfo", "gethostbyname"):
        if hasattr(_socket_mod, _name):
            setattr(_socket_mod, _name, _blocked)
    try:
        import _socket
        _socket.socket = _blocked
    except Exception:
        pass
__passk_block_network()
del __passk_block_network
"""

# The launcher runs in the child, as the parent's user, before the untrusted program. It prints
# nothing; its status line (isolation applied, uid) goes to the pipe cfg["status_fd"] the parent reads.
_LAUNCHER = r"""
import ctypes, json, os, resource, signal, sys
cfg = json.loads(sys.argv[1])
status = os.fdopen(cfg["status_fd"], "w")
libc = ctypes.CDLL(None, use_errno=True)
NEWNS, NEWNET, NEWPID, NEWUSER = 0x00020000, 0x40000000, 0x20000000, 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
FLAG = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
        "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
work = cfg["workdir"]
iso = {"net": "socket-prelude", "fs": "none", "pid": "pgid"}
is_root = os.geteuid() == 0

def unshare(flags):
    try:
        return libc.unshare(ctypes.c_int(flags)) == 0
    except AttributeError:  # not Linux
        return False

def mount(src, dst, fstype, flags):
    enc = lambda s: None if s is None else s.encode()
    try:
        return libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), None) == 0
    except AttributeError:
        return False

if cfg["isolate"]:
    if unshare(NEWNET) or (not is_root and unshare(NEWUSER | NEWNET)):
        iso["net"] = "netns"
    if is_root and unshare(NEWNS):
        ok = mount(None, "/", None, MS_REC | MS_PRIVATE) and mount(work, work, None, MS_BIND | MS_REC)
        if ok:
            points = []
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    parts = line.split()
                    point = parts[4].encode().decode("unicode_escape")
                    opts = parts[5].split(",")
                    points.append((point, opts))
            root_ok = False
            for point, opts in points:
                if point == work or point.startswith(work.rstrip("/") + "/"):
                    continue
                extra = 0
                for o in opts:
                    extra |= FLAG.get(o, 0)
                done = mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | extra)
                if point == "/":
                    root_ok = done
            if root_ok:
                iso["fs"] = "mountns"
    pidns = is_root and unshare(NEWPID)
else:
    pidns = False

if iso["net"] != "netns":  # weaker fallback: disable the socket module inside the program
    with open(cfg["program"], encoding="utf-8") as f:
        source = f.read()
    with open(cfg["program"], "w", encoding="utf-8") as f:
        f.write(cfg["prelude"] + source)

uid = cfg["uid"]
if uid is not None and is_root:
    os.chown(work, uid, uid)
    iso["fs"] = "mountns+uid" if iso["fs"] == "mountns" else "uid"
else:
    uid = None

def exit_like(st):
    os._exit(os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))

def run_program():
    lim = cfg["limits"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["nofile"], lim["nofile"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.chdir(work)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": work, "PYTHONDONTWRITEBYTECODE": "1"}
    os.execve(cfg["python"], [cfg["python"], "-I", "-S", cfg["program"]], env)

def init():
    # PID 1 of the new PID namespace (trusted): dies with the launcher (PR_SET_PDEATHSIG), mounts a
    # private /proc, runs the program as its child and exits with its status; the kernel then kills
    # everything left in the namespace.
    try:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except AttributeError:
        pass
    if iso["fs"].startswith("mountns"):
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            run_program()
        finally:
            os._exit(127)
    exit_like(os.waitpid(pid, 0)[1])

if pidns:
    iso["pid"] = "pidns"
status.write(json.dumps({"isolation": iso, "uid": uid}) + "\n")
status.close()
if not pidns:
    run_program()
pid = os.fork()
if pid == 0:
    try:
        init()
    finally:
        os._exit(127)
exit_like(os.waitpid(pid, 0)[1])
"""

_UID_BASE = 1_900_000_000
_uid_counter = itertools.count()
_uid_lock = threading.Lock()


def _next_uid() -> int:
    with _uid_lock:
        slot = next(_uid_counter) % 256
    return _UID_BASE + (os.getpid() % 65536) * 256 + slot


def _world_reachable(path: str) -> bool:
    """Whether ``path`` can be executed by any user: every ancestor o+x, the file o+rx."""
    path = os.path.realpath(path)
    try:
        if not stat.S_IMODE(os.stat(path).st_mode) & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        while True:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            if parent == "/":
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


@functools.lru_cache(maxsize=2)
def pick_interpreter(unprivileged: bool) -> str:
    """The Python interpreter for the sandbox: reachable by the sandbox uid when ``unprivileged``.

    Returns ``""`` when ``unprivileged`` and no candidate is world-reachable.
    """
    if not unprivileged:
        return sys.executable
    candidates = (
        sys.executable,
        getattr(sys, "_base_executable", ""),
        "/usr/bin/python3",
        "/usr/local/bin/python3",
    )
    for cand in candidates:
        if cand and os.path.exists(cand) and _world_reachable(cand):
            return os.path.realpath(cand)
    return ""


def _kill_uid(uid: int, python: str) -> None:
    """Kill every process of ``uid`` (the sandbox uid; only used without a PID namespace)."""
    code = f"import os,signal\nos.setgroups([])\nos.setgid({uid})\nos.setuid({uid})\nos.kill(-1, 9)"
    try:
        subprocess.run(
            [python, "-I", "-S", "-c", code],
            env={},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        pass


def _read_capped(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit)
    return data.decode("utf-8", errors="replace")


def run_python(
    code: str,
    limits: SandboxLimits = SandboxLimits(),
    isolate: bool = True,
    drop_uid: bool = True,
    tmp_root: str | None = None,
) -> SandboxResult:
    """Run the Python program ``code`` in the sandbox described in the module docstring.

    Args:
      code: program source (run as ``main.py`` in a fresh temporary directory).
      limits: resource limits.
      isolate: use namespaces (network, mount, PID) where available; False only for debugging.
      drop_uid: when running as root, run the program under an unprivileged per-call uid.
      tmp_root: where the temporary directories go (default: the system temp dir).

    Returns:
      A :class:`SandboxResult`; never raises for anything the program does.
    """
    start = time.monotonic()
    uid = _next_uid() if (drop_uid and os.geteuid() == 0) else None
    python = pick_interpreter(uid is not None)
    if not python:  # no interpreter reachable by an unprivileged uid: run as ourselves
        uid, python = None, sys.executable
    base = tempfile.mkdtemp(prefix="passk_sbx_", dir=tmp_root)
    try:
        os.chmod(base, 0o711)  # the sandbox uid may traverse into work/, not list base/
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        io_dir = os.path.join(base, "io")
        os.mkdir(io_dir, 0o700)
        program = os.path.join(work, "main.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(code)
        cfg = {
            "workdir": work,
            "program": program,
            "python": python,
            "uid": uid,
            "isolate": bool(isolate),
            "prelude": _SOCKET_PRELUDE,
            "limits": dataclasses.asdict(limits),
        }
        status_r, status_w = os.pipe()
        cfg["status_fd"] = status_w
        out_path, err_path = os.path.join(io_dir, "stdout"), os.path.join(io_dir, "stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(cfg)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                    cwd=work,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=(status_w,),
                    preexec_fn=None,
                )
            finally:
                os.close(status_w)
            status = _read_status(status_r)
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc)
        isolation = status.get("isolation", {"net": "unknown", "fs": "unknown", "pid": "unknown"})
        if isolation.get("pid") != "pidns" and status.get("uid") is not None:
            _kill_uid(status["uid"], sys.executable)
        rc = None if timed_out else proc.returncode
        if rc is not None and rc < 0:
            rc = 128 - rc
        return SandboxResult(
            returncode=rc,
            stdout=_read_capped(out_path, limits.output_bytes),
            stderr=_read_capped(err_path, limits.output_bytes),
            timed_out=timed_out,
            duration_s=time.monotonic() - start,
            uid=status.get("uid"),
            isolation=isolation,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _read_status(fd: int) -> dict[str, Any]:
    with os.fdopen(fd, "r") as f:
        line = f.readline()
    try:
        return json.loads(line)
    except ValueError:
        return {}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed process always exits
        pass
