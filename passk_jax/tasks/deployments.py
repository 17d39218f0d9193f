"""Emulate a non-root deployment in a child process, to test what the sandbox does there.

:func:`run_unprivileged` runs Python source in a child that, after importing what it needs, drops to
an unprivileged uid (``nobody`` by default) with no capabilities and ``PR_SET_NO_NEW_PRIVS``, and
optionally installs a seccomp filter that makes ``unshare(2)`` / ``clone(2)`` with namespace flags
fail with ``EPERM`` (``clone3`` with ``ENOSYS``): the policy of Docker's default seccomp profile, i.e.
a deployment where unprivileged user namespaces are not available. Needs root to set up (Linux,
x86_64 or aarch64 for the filter).

So that the interpreter stays reachable by the unprivileged uid even when it lives in a private
directory (such as ``/root/.pyenv``), the child first enters a private mount namespace in which the
directories above the interpreter's prefix are replaced by world-traversable ones (the prefix itself
is bound back unchanged). Nothing outside the child is affected.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import subprocess
import sys

__all__ = ["block_namespaces", "run_unprivileged"]

_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_ARCH = {  # machine -> (AUDIT_ARCH, unshare, clone, clone3)
    "x86_64": (0xC000003E, 272, 56, 435),
    "aarch64": (0xC00000B7, 97, 220, 435),
}


def block_namespaces() -> None:
    """Install (in this process, irreversibly) a seccomp filter refusing new namespaces."""
    arch, nr_unshare, nr_clone, nr_clone3 = _ARCH[platform.machine()]
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog = [
        (ld, 0, 0, 4),  # 0: arch
        (jeq, 0, 8, arch),  # 1: other arch -> allow (10)
        (ld, 0, 0, 0),  # 2: syscall number
        (jeq, 3, 0, nr_unshare),  # 3: -> 7
        (jeq, 2, 0, nr_clone),  # 4: -> 7
        (jeq, 5, 0, nr_clone3),  # 5: -> 11
        (ret, 0, 0, allow),  # 6
        (ld, 0, 0, 16),  # 7: low word of args[0] (flags)
        (jset, 0, 1, _NS_FLAGS),  # 8: -> 9 / 10
        (ret, 0, 0, eperm),  # 9
        (ret, 0, 0, allow),  # 10
        (ret, 0, 0, enosys),  # 11
    ]
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = _Prog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, MODE_FILTER
        raise OSError(ctypes.get_errno(), "seccomp filter not installed")


_CHILD = r"""
import ctypes, os, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, block, prefix = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
def mnt(src, dst, fs, flags, data=None):
    e = lambda s: None if s is None else s.encode()
    if libc.mount(e(src), e(dst), e(fs), ctypes.c_ulong(flags), e(data)) != 0:
        raise OSError(ctypes.get_errno(), "mount %s" % dst)
# Private mount namespace; make every ancestor of the interpreter prefix world-traversable.
if libc.unshare(0x00020000) != 0:
    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
mnt(None, "/", None, 16384 | (1 << 18))
parts = prefix.strip("/").split("/")
for i in range(1, len(parts)):
    anc = "/" + "/".join(parts[:i])
    if os.stat(anc).st_mode & stat.S_IXOTH:
        continue
    stage = "/proc/self/fd/%d" % os.open(anc + "/" + parts[i], os.O_PATH)
    keep = "/dev/shm/.passk_stage_%d" % os.getpid()
    os.mkdir(keep)
    mnt(stage, keep, None, 4096 | 16384)
    mnt("tmpfs", anc, "tmpfs", 0, "mode=0755")
    os.mkdir(anc + "/" + parts[i])
    mnt(keep, anc + "/" + parts[i], None, 8192)  # MS_MOVE
    os.rmdir(keep)
    break
sys.path[:0] = [p for p in os.environ.get("PASSK_PATH", "").split(":") if p]
import passk_jax.tasks.sandbox, passk_jax.tasks.code  # noqa: imported while still root
if block:
    from passk_jax.tasks.deployments import block_namespaces
    block_namespaces()
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
os.chdir("/tmp")
src = sys.stdin.read()
exec(compile(src, "<unprivileged>", "exec"), {"__name__": "__main__"})
"""


def run_unprivileged(
    source: str, uid: int = 65534, block_userns: bool = True, timeout: float = 120.0
) -> subprocess.CompletedProcess:
    """Run ``source`` in a child as ``uid`` (no capabilities); ``block_userns`` adds the filter.

    Returns the completed process (text stdout / stderr); the caller checks ``returncode``.
    """
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PASSK_PATH": here,
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
    }
    return subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(uid),
            "1" if block_userns else "0",
            os.path.realpath(sys.base_prefix),
        ],
        input=source,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
