"""Run untrusted Python code (model completions) in a contained, resource-limited process tree.

Threat model: the program is adversarial. One run is contained as a whole, not process by process:

* **Isolation levels are explicit.** The launcher (trusted code in
  ``passk_jax/tasks/_sandbox_launcher.py``) reports, on a pipe the program never holds, which
  mechanisms it obtained; :attr:`SandboxResult.isolation` lists them:

  - ``mount``: a fresh mount namespace whose root is a size-limited tmpfs holding only read-only
    binds of the interpreter's directories (``/usr``, ``/lib*``, ``/bin``, ``/sbin``, the Python
    prefix, ``/etc/ld.so.cache``), four ``/dev`` nodes, a fresh ``/proc`` and writable ``/tmp``,
    ``/dev/shm`` and ``/sandbox`` (the working directory) on that tmpfs. The host's files, home
    directories, checkpoints and Unix sockets are not in the program's view;
  - ``pid``: a new PID namespace whose PID 1 is the trusted launcher; the program cannot see or
    signal processes outside it, and when PID 1 exits the kernel kills every process left in it
    (double-forked daemons included);
  - ``net``: a new network namespace (only a loopback interface, down): no address, and no abstract
    Unix socket of the host, is reachable;
  - ``ipc``: a new IPC namespace: SysV / POSIX IPC objects are private to the run and destroyed with
    it;
  - ``uid`` (root deployments): the program runs under a per-call unprivileged uid with no groups;
  - ``user`` (non-root deployments): the namespaces were created inside a user namespace that maps
    only the caller's uid; the program holds no capabilities;
  - ``cgroup``: all processes of the run are in per-run cgroups (v2, or v1 ``memory`` / ``pids`` /
    ``cpu``) that bound their summed memory (tmpfs and shared memory included), process count and
    CPU share. Without it the launcher polls the run's summed resident memory, tmpfs and SysV shared
    memory every few milliseconds and kills the run when it exceeds the limit (a fallback that can
    overshoot by what the run allocates between two polls; the tmpfs is size-limited either way).

* **A minimum is enforced.** ``min_isolation`` (default :data:`FULL_ISOLATION` = ``mount``, ``pid``,
  ``net``, ``ipc``) is checked by the launcher before the program is written or run; with less it
  raises :class:`IsolationError`, saying what is missing and how to get it. ``min_isolation=()`` is the
  explicit opt-in to run with whatever is available; the result then lists
  :attr:`SandboxResult.unprotected`.

* **Always, at every level**: ``RLIMIT_CPU``, ``RLIMIT_AS`` (per process), ``RLIMIT_FSIZE``,
  ``RLIMIT_NOFILE``, ``RLIMIT_CORE = 0``, ``PR_SET_NO_NEW_PRIVS``, a minimal environment, stdin
  ``/dev/null``, stdout / stderr drained by the parent (only the first ``output_bytes`` kept, so output
  volume never blocks or kills the program) and a wall-clock limit after which the whole tree is
  killed (session, cgroup, PID namespace). Host-side clean-up never recurses and never raises.

Not protected against: kernel exploits (no seccomp filter), CPU time of a run without ``cgroup``
beyond ``RLIMIT_CPU`` per process, covert timing channels, and reading what the interpreter's
directories contain. Linux only; elsewhere no isolation is obtained and the default refuses to run.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import os
import selectors
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from passk_jax.tasks.base import ScorerConfigError

__all__ = [
    "FULL_ISOLATION",
    "IsolationError",
    "SandboxLimits",
    "SandboxProcess",
    "SandboxResult",
    "isolation_available",
    "parse_isolation",
    "reap_leftovers",
    "remove_tree",
    "run_python",
    "unprotected",
]

FULL_ISOLATION: tuple[str, ...] = ("mount", "pid", "net", "ipc")
_KNOWN = ("mount", "pid", "net", "ipc", "uid", "user", "cgroup")
_WHAT = {
    "mount": "the host filesystem (files, checkpoints, tokens, Unix sockets) is visible and "
    "world-writable places such as /tmp are writable",
    "pid": "the program can see and signal the trainer's processes and can leave daemons behind",
    "net": "the network (127.0.0.1 and abstract Unix sockets included) is reachable",
    "ipc": "SysV / POSIX IPC objects are shared with the host and outlive the run",
    "cgroup": "memory is bounded per process (RLIMIT_AS) plus a polling monitor, not by a cgroup",
}
_HOW = (
    "run as root (e.g. in a container started with --privileged or CAP_SYS_ADMIN), or allow "
    "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
    "user.max_user_namespaces > 0, and no seccomp / AppArmor profile blocking unshare(2))"
)
_LAUNCHER_SOURCE = open(  # noqa: SIM115 -- read once at import
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_launcher.py"),
    encoding="utf-8",
).read()
_PREFIX = "passk_sbx_"


class IsolationError(ScorerConfigError):
    """The sandbox cannot obtain the isolation that ``min_isolation`` requires (nothing was run)."""


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run.

    Attributes:
      timeout_s: wall-clock limit; the whole process tree is killed after it.
      cpu_s: ``RLIMIT_CPU`` seconds per process (SIGXCPU, then SIGKILL one second later).
      memory_bytes: summed memory of the run: the cgroup limit (anonymous memory, tmpfs, shared
        memory of all its processes), else the polling monitor's; also each process's
        ``RLIMIT_AS`` and the size of the run's tmpfs.
      file_bytes: ``RLIMIT_FSIZE``: the largest file the program may write.
      nproc: processes of the run (cgroup ``pids.max``; ``RLIMIT_NPROC`` of the sandbox uid).
      nofile: ``RLIMIT_NOFILE``: open file descriptors.
      output_bytes: at most this much of stdout and of stderr is kept (the rest is read and dropped).
      cpus: CPU share of the run (cgroup CPU quota, in CPUs).
    """

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 512 * 1024**2
    file_bytes: int = 16 * 1024**2
    nproc: int = 32
    nofile: int = 64
    output_bytes: int = 64 * 1024
    cpus: float = 1.0


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """What came back from one sandboxed run.

    Attributes:
      returncode: exit status of the program (``128 + signal`` when killed by a signal), or ``None``
        if the wall-clock timeout fired.
      stdout, stderr: decoded (UTF-8, replacement characters), first ``output_bytes`` only.
      timed_out: whether the wall-clock timeout fired.
      duration_s: wall-clock seconds.
      uid: the host uid the program ran under when one was dropped to (root deployments).
      isolation: the mechanisms obtained, sorted (module docstring), e.g.
        ``("cgroup", "ipc", "mount", "net", "pid", "uid")``.
      unprotected: what the missing members of :data:`FULL_ISOLATION` (and ``cgroup``) leave open.
      memory_exceeded: the run was stopped for exceeding ``memory_bytes`` (cgroup OOM or monitor).
      memory_peak_bytes: the cgroup's peak memory (``None`` without a cgroup).
    """

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    uid: int | None
    isolation: tuple[str, ...]
    unprotected: tuple[str, ...] = ()
    memory_exceeded: bool = False
    memory_peak_bytes: int | None = None

    @property
    def level(self) -> str:
        """The isolation as one string, e.g. ``"cgroup+ipc+mount+net+pid+uid"`` (``"none"``)."""
        return "+".join(self.isolation) or "none"


def unprotected(isolation: Iterable[str]) -> tuple[str, ...]:
    """Sentences naming what a run with ``isolation`` does not protect (empty at full isolation)."""
    got = set(isolation)
    return tuple(f"no {k}: {_WHAT[k]}" for k in (*FULL_ISOLATION, "cgroup") if k not in got)


def parse_isolation(value: str | Sequence[str]) -> tuple[str, ...]:
    """A ``min_isolation`` value from code or a config: a sequence of mechanisms, or a string
    ``"full"`` (:data:`FULL_ISOLATION`), ``"none"`` / ``""`` (the explicit opt-in) or
    ``"mount+pid+net"``."""
    if isinstance(value, str):
        if value.strip().lower() == "full":
            return FULL_ISOLATION
        if value.strip().lower() in ("none", ""):
            return ()
        return _check_min(value.split("+"))
    return _check_min(value)


def _check_min(min_isolation: Sequence[str]) -> tuple[str, ...]:
    if isinstance(min_isolation, str):
        return parse_isolation(min_isolation)
    req = tuple(sorted({str(k).strip() for k in min_isolation}))
    bad = [k for k in req if k not in _KNOWN]
    if bad:
        raise ValueError(f"unknown isolation mechanisms {bad}; known: {_KNOWN}")
    return req


def _refusal(missing: Sequence[str], got: Sequence[str]) -> str:
    lines = [
        f"the sandbox got isolation {'+'.join(sorted(got)) or 'none'} but min_isolation requires "
        f"{'+'.join(sorted(missing))} as well; refusing to run model code. Missing:"
    ]
    lines += [f"  - {k}: {_WHAT.get(k, k)}" for k in missing]
    lines.append(f"To get it: {_HOW}.")
    lines.append(
        "Or opt in explicitly to weaker isolation with min_isolation=() (or a smaller tuple); "
        "the result's .unprotected then lists what is not protected."
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Host-side helpers: interpreter, binds, clean-up.
# ------------------------------------------------------------------------------------------------


def _interpreter() -> str:
    """The base interpreter (not a venv shim): the one the sandbox executes inside its new root."""
    real = os.path.realpath(sys.executable)
    base = os.path.realpath(sys.base_prefix)
    if real.startswith(base + os.sep):
        return real
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        cand = os.path.join(base, "bin", name)
        if os.path.exists(cand):
            return os.path.realpath(cand)
    return real


def _binds(python: str) -> list[str]:
    """Host paths bound read-only into the new root: what the interpreter needs, nothing else."""
    out = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc/ld.so.cache"]
    for path in (os.path.realpath(sys.base_prefix), os.path.dirname(python)):
        if not any(path == b or path.startswith(b + "/") for b in out):
            out.append(path)
    return out


def _world_reachable(path: str) -> bool:
    """Whether any user may execute ``path``: every ancestor o+x, the file o+x."""
    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & stat.S_IXOTH:
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


def remove_tree(path: str) -> bool:
    """Delete ``path`` and everything under it without recursion; never raises.

    Works from directory descriptors (``openat``-style), so neither the depth nor the length of the
    paths matters (a 3000-deep chain, far beyond ``PATH_MAX``, is fine); never follows symlinks;
    makes directories writable before emptying them; gives up on an entry that cannot be removed
    instead of retrying it. Returns whether ``path`` is gone.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path)
        except OSError:
            pass
        return not os.path.lexists(path)
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
    try:
        cur = os.open(path, flags)
    except OSError:
        return False
    names: list[str] = []  # the chain of directory names from ``path`` down to ``cur``
    stuck: set[tuple[int, int]] = set()
    budget = 10_000_000  # bounded work whatever happens
    try:
        while budget > 0:
            budget -= 1
            try:
                os.chmod(cur, 0o700)
            except OSError:
                pass
            child = None
            try:
                with os.scandir(cur) as it:
                    for entry in it:
                        budget -= 1
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        if (info.st_dev, info.st_ino) in stuck:
                            continue
                        if stat.S_ISDIR(info.st_mode):
                            child = entry.name
                            break
                        try:
                            os.unlink(entry.name, dir_fd=cur)
                        except OSError:
                            stuck.add((info.st_dev, info.st_ino))
            except OSError:
                pass
            if child is not None:
                try:
                    new = os.open(child, flags, dir_fd=cur)
                except OSError:
                    try:
                        info = os.stat(child, dir_fd=cur, follow_symlinks=False)
                        stuck.add((info.st_dev, info.st_ino))
                    except OSError:
                        pass
                    continue
                os.close(cur)
                cur = new
                names.append(child)
                continue
            if not names:
                break
            try:
                parent = os.open("..", flags & ~getattr(os, "O_NOFOLLOW", 0), dir_fd=cur)
            except OSError:
                break
            here = os.fstat(cur)
            os.close(cur)
            cur = parent
            name = names.pop()
            try:
                os.rmdir(name, dir_fd=cur)
            except OSError:
                stuck.add((here.st_dev, here.st_ino))
    finally:
        try:
            os.close(cur)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass
    return not os.path.lexists(path)


# ------------------------------------------------------------------------------------------------
# cgroups (root deployments; v2 where its controllers are usable, else v1).
# ------------------------------------------------------------------------------------------------


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of every mount of this process."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                parts, rparts = left.split(), right.split()
                if len(parts) > 4 and len(rparts) >= 3:
                    out.append((parts[4], rparts[0], set(rparts[2].split(","))))
    except OSError:
        pass
    return out


def _own_cgroups() -> dict[str, str]:
    """Controller (or ``""`` for v2) -> this process's cgroup path."""
    out: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                for c in ctrls.split(",") if ctrls else [""]:
                    out[c] = path
    except (OSError, ValueError):
        pass
    return out


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


_cg_lock = threading.Lock()
_cg_counter = itertools.count()
_cg_layout: dict[str, Any] = {}


def _cgroup_layout() -> dict[str, Any]:
    """Where per-run cgroups can be made: ``{"v2": dir}`` or ``{"v1": {controller: dir}}`` or {}."""
    with _cg_lock:
        if _cg_layout:
            return _cg_layout["value"]
        value: dict[str, Any] = {}
        if os.geteuid() == 0 and sys.platform.startswith("linux"):
            own = _own_cgroups()
            mounts = _mounts()
            for point, fstype, _ in mounts:
                if fstype == "cgroup2" and "" in own:
                    base = os.path.normpath(point + own[""])
                    ctrls = (_read(os.path.join(base, "cgroup.controllers")) or "").split()
                    if {"memory", "pids"} <= set(ctrls):
                        want = " ".join(f"+{c}" for c in ("memory", "pids", "cpu") if c in ctrls)
                        _write(os.path.join(base, "cgroup.subtree_control"), want)
                        sub = (_read(os.path.join(base, "cgroup.subtree_control")) or "").split()
                        if {"memory", "pids"} <= set(sub):
                            value = {"v2": base}
                            break
            if not value:
                v1 = {}
                for point, fstype, opts in mounts:
                    for c in ("memory", "pids", "cpu"):
                        if fstype == "cgroup" and c in opts and c in own and c not in v1:
                            base = os.path.normpath(point + own[c])
                            if os.access(base, os.W_OK):
                                v1[c] = base
                if {"memory", "pids"} <= set(v1):
                    value = {"v1": v1}
        _cg_layout["value"] = value
        return value


class _Cgroups:
    """The per-run cgroups: created before the launcher starts, removed after the run."""

    def __init__(self, limits: SandboxLimits):
        self.dirs: list[str] = []
        self.kind = ""
        layout = _cgroup_layout()
        name = f"{_PREFIX}{os.getpid()}_{next(_cg_counter)}"
        quota = max(1000, int(100_000 * limits.cpus))
        mem = str(int(limits.memory_bytes))
        try:
            if "v2" in layout:
                d = os.path.join(layout["v2"], name)
                os.mkdir(d)
                self.dirs, self.kind = [d], "v2"
                ok = _write(os.path.join(d, "memory.max"), mem)
                _write(os.path.join(d, "memory.swap.max"), "0")
                ok = _write(os.path.join(d, "pids.max"), str(limits.nproc)) and ok
                _write(os.path.join(d, "cpu.max"), f"{quota} 100000")
            elif "v1" in layout:
                self.kind = "v1"
                ok = True
                for c, base in layout["v1"].items():
                    d = os.path.join(base, name)
                    os.mkdir(d)
                    self.dirs.append(d)
                    if c == "memory":
                        ok = _write(os.path.join(d, "memory.limit_in_bytes"), mem) and ok
                        _write(os.path.join(d, "memory.memsw.limit_in_bytes"), mem)
                        _write(os.path.join(d, "memory.swappiness"), "0")
                    elif c == "pids":
                        ok = _write(os.path.join(d, "pids.max"), str(limits.nproc)) and ok
                    elif c == "cpu":
                        _write(os.path.join(d, "cpu.cfs_period_us"), "100000")
                        _write(os.path.join(d, "cpu.cfs_quota_us"), str(quota))
            else:
                ok = False
        except OSError:
            ok = False
        if not ok:
            self.remove()
            self.dirs, self.kind = [], ""

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def peak(self) -> int | None:
        for d in self.dirs:
            for name in ("memory.peak", "memory.max_usage_in_bytes"):
                text = _read(os.path.join(d, name))
                if text and text.strip().isdigit():
                    return int(text)
        return None

    def oom(self) -> bool:
        for d in self.dirs:
            text = _read(os.path.join(d, "memory.events")) or ""
            for line in text.splitlines():
                if line.startswith("oom_kill ") and line.split()[1] != "0":
                    return True
            failcnt = _read(os.path.join(d, "memory.failcnt"))
            if failcnt and failcnt.strip().isdigit() and int(failcnt) > 0:
                text = _read(os.path.join(d, "memory.oom_control")) or ""
                if any(
                    ln.startswith("oom_kill ") and ln.split()[1] != "0" for ln in text.split("\n")
                ):
                    return True
        return False

    def remove(self) -> None:
        """Kill every process left in the cgroups, then remove them (bounded time; never raises)."""
        for d in self.dirs:
            _kill_cgroup(d)
        for d in self.dirs:
            deadline = time.monotonic() + 5
            while os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    _kill_cgroup(d)
                    time.sleep(0.005)


def _kill_cgroup(d: str) -> None:
    if _write(os.path.join(d, "cgroup.kill"), "1"):
        return
    for _ in range(100):
        pids = (_read(os.path.join(d, "cgroup.procs")) or "").split()
        if not pids:
            return
        for p in pids:
            try:
                os.kill(int(p), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        time.sleep(0.001)


def reap_leftovers(pid: int) -> None:
    """Kill and remove the cgroups and temporary directories left by process ``pid`` (if it died).

    A scorer worker killed on a deadline cannot clean up after its sandboxes; the pool calls this.
    """
    layout = _cgroup_layout()
    bases = [layout["v2"]] if "v2" in layout else list(layout.get("v1", {}).values())
    tag = f"{_PREFIX}{pid}_"
    for base in bases:
        try:
            names = [n for n in os.listdir(base) if n.startswith(tag)]
        except OSError:
            continue
        for n in names:
            d = os.path.join(base, n)
            _kill_cgroup(d)
            deadline = time.monotonic() + 5
            while os.path.isdir(d) and time.monotonic() < deadline:
                try:
                    os.rmdir(d)
                except OSError:
                    _kill_cgroup(d)
                    time.sleep(0.005)
    tmp = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(tmp) if n.startswith(tag)]
    except OSError:
        names = []
    for n in names:
        remove_tree(os.path.join(tmp, n))


# ------------------------------------------------------------------------------------------------
# One run.
# ------------------------------------------------------------------------------------------------

_UID_BASE = 1_900_000_000
_uid_counter = itertools.count()
_uid_lock = threading.Lock()


def _next_uid() -> int:
    with _uid_lock:
        slot = next(_uid_counter) % 256
    return _UID_BASE + (os.getpid() % 65536) * 256 + slot


class SandboxProcess:
    """One running sandboxed program (what :func:`run_python` drives; also used by the code harness).

    ``pass_fds`` are descriptors the program receives as 3, 4, ... (e.g. pipes to a trusted
    checker). Output is drained in a background thread. Call :meth:`wait` (or :meth:`kill`) and
    then :meth:`close` (idempotent; also done by :meth:`result`).
    """

    def __init__(
        self,
        code: str,
        limits: SandboxLimits = SandboxLimits(),
        min_isolation: Sequence[str] = FULL_ISOLATION,
        pass_fds: Sequence[int] = (),
        isolate: bool = True,
    ):
        self.limits = limits
        self.require = _check_min(min_isolation)
        self.start = time.monotonic()
        self.status: dict[str, Any] = {}
        self.memory_exceeded = False
        self._out = {1: bytearray(), 2: bytearray()}
        self._closed = False
        self.timed_out = False
        self.uid = _next_uid() if os.geteuid() == 0 else None
        self.base = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}_")
        os.chmod(self.base, 0o711)
        work = os.path.join(self.base, "work")
        os.mkdir(work, 0o700)
        self.cgroups = _Cgroups(limits) if isolate else None
        python = _interpreter()
        cfg = {
            "parent_pid": os.getpid(),
            "workdir": work,
            "python": python,
            "binds": _binds(python),
            "uid": self.uid,
            "uid_without_mount": self.uid is not None and _world_reachable(python),
            "isolate": bool(isolate),
            "require": list(self.require),
            "cgroups": self.cgroups.procs_files if self.cgroups else [],
            "limits": dataclasses.asdict(limits),
        }
        status_r, status_w = os.pipe()
        cfg["status_fd"] = status_w
        cfg["pass_fds"] = list(pass_fds)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER_SOURCE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                cwd=work,
                start_new_session=True,
                close_fds=True,
                pass_fds=(status_w, *pass_fds),
            )
        except BaseException:
            os.close(status_r)
            os.close(status_w)
            self.close()
            raise
        os.close(status_w)
        self._status_r = status_r
        payload = json.dumps(cfg).encode() + b"\n" + code.encode("utf-8", "surrogatepass")
        self._status_ready = threading.Event()
        self._drain = threading.Thread(target=self._pump, args=(payload,), daemon=True)
        self._drain.start()

    def _pump(self, payload: bytes) -> None:
        """Feed the config and program, then drain stdout, stderr and the status pipe until EOF."""
        try:
            self.proc.stdin.write(payload)
        except OSError:
            pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        sel = selectors.DefaultSelector()
        fds = {self.proc.stdout.fileno(): 1, self.proc.stderr.fileno(): 2, self._status_r: 0}
        for fd in fds:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        status_buf = bytearray()
        cap = self.limits.output_bytes
        try:
            while fds:
                for key, _ in sel.select(timeout=1.0):
                    fd = key.fd
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        sel.unregister(fd)
                        if fds.pop(fd) == 0:
                            self._parse_status(status_buf)
                        continue
                    which = fds[fd]
                    if which == 0:
                        if len(status_buf) < 1 << 16:
                            status_buf += chunk
                        self._parse_status(status_buf, partial=True)
                    elif len(self._out[which]) < cap:
                        self._out[which] += chunk[: cap - len(self._out[which])]
        finally:
            sel.close()
            self._parse_status(status_buf)

    def _parse_status(self, buf: bytes, partial: bool = False) -> None:
        lines = bytes(buf).split(b"\n")
        if partial:
            lines = lines[:-1]
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "isolation" in msg and not self.status:
                self.status = msg
                self._status_ready.set()
            if msg.get("memory_exceeded"):
                self.memory_exceeded = True
        if not partial:
            self._status_ready.set()

    def isolation_report(self, timeout: float | None = None) -> dict[str, Any]:
        """The launcher's report (waits for it): ``{"isolation": [...], "missing": [...], ...}``."""
        self._status_ready.wait(self.limits.timeout_s if timeout is None else timeout)
        return self.status

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the run to end (at most ``timeout``, default the wall-clock limit); kill if not."""
        remaining = self.limits.timeout_s - (time.monotonic() - self.start)
        timeout = remaining if timeout is None else min(timeout, remaining)
        try:
            return self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.kill()
            return None

    def kill(self) -> None:
        """Kill the launcher's session and every process of the run's cgroups."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        if self.cgroups is not None:
            for d in self.cgroups.dirs:
                _kill_cgroup(d)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed process exits
            pass

    def close(self) -> None:
        """Kill what is left, remove cgroups and the host temporary directory; never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            if getattr(self, "proc", None) is not None:
                if self.proc.poll() is None:
                    self.kill()
                else:
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                if self.status.get("uid") is not None and "pid" not in self.status.get(
                    "isolation", ()
                ):
                    _kill_uid(self.status["uid"])
                self._drain.join(timeout=5)
                for f in (self.proc.stdout, self.proc.stderr):
                    try:
                        f.close()
                    except OSError:
                        pass
                try:
                    os.close(self._status_r)
                except OSError:
                    pass
        finally:
            if self.cgroups is not None:
                self.peak = self.cgroups.peak()
                if self.cgroups.oom():
                    self.memory_exceeded = True
                self.cgroups.remove()
            remove_tree(self.base)

    def result(self) -> SandboxResult:
        """Close the run and summarise it."""
        rc = None if self.timed_out else self.proc.poll()
        self.close()
        if rc is not None and rc < 0:
            rc = 128 - rc
        got = tuple(self.status.get("isolation", ()))
        missing = self.status.get("missing")
        if missing is None and not self.timed_out and self.require:
            err = self._out[2].decode("utf-8", errors="replace")[-2000:]
            raise IsolationError(f"the sandbox launcher failed before reporting:\n{err}")
        if missing:
            raise IsolationError(_refusal(missing, got))
        return SandboxResult(
            returncode=rc,
            stdout=self._out[1].decode("utf-8", errors="replace"),
            stderr=self._out[2].decode("utf-8", errors="replace"),
            timed_out=self.timed_out,
            duration_s=time.monotonic() - self.start,
            uid=self.status.get("uid"),
            isolation=got,
            unprotected=unprotected(got),
            memory_exceeded=self.memory_exceeded,
            memory_peak_bytes=getattr(self, "peak", None),
        )


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (a per-call sandbox uid; used only without a PID namespace)."""
    code = f"import os\nos.setgroups([])\nos.setgid({uid})\nos.setuid({uid})\nos.kill(-1, 9)"
    try:
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", code],
            env={},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        pass


_warned: set[tuple[str, ...]] = set()


def run_python(
    code: str,
    limits: SandboxLimits = SandboxLimits(),
    min_isolation: Sequence[str] = FULL_ISOLATION,
    isolate: bool = True,
) -> SandboxResult:
    """Run the Python program ``code`` in the sandbox described in the module docstring.

    Args:
      code: program source (run as ``main.py`` in the run's working directory).
      limits: resource limits.
      min_isolation: mechanisms the run must obtain (:data:`FULL_ISOLATION` by default); with less,
        :class:`IsolationError` is raised and nothing runs. ``()`` opts in to whatever is available
        (a warning names what is unprotected, once per level).
      isolate: False skips namespaces and cgroups (debugging only; needs ``min_isolation=()``).

    Returns:
      A :class:`SandboxResult`; never raises for anything the program does.

    Raises:
      IsolationError: the isolation obtained is below ``min_isolation``.
    """
    proc = SandboxProcess(code, limits, min_isolation, isolate=isolate)
    try:
        proc.wait()
    finally:
        res = proc.result()
    if res.unprotected and not set(FULL_ISOLATION) <= set(res.isolation):
        key = res.isolation
        if key not in _warned:
            _warned.add(key)
            warnings.warn(
                f"sandbox ran at isolation {res.level!r} (opted in): " + "; ".join(res.unprotected),
                RuntimeWarning,
                stacklevel=2,
            )
    return res


_probe_cache: dict[tuple[int, bool], tuple[str, ...]] = {}


def isolation_available(refresh: bool = False) -> tuple[str, ...]:
    """The mechanisms a run obtains in this process's deployment (probed once with a no-op run)."""
    key = (os.geteuid(), True)
    if refresh or key not in _probe_cache:
        proc = SandboxProcess("pass", SandboxLimits(timeout_s=30.0), min_isolation=())
        try:
            proc.wait()
        finally:
            _probe_cache[key] = proc.result().isolation
    return _probe_cache[key]
