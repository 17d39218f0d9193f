"""Trusted launcher of one sandboxed run (stdlib only; run as ``python -I -S -c SOURCE``).

Not imported by the library: :mod:`passk_jax.tasks.sandbox` reads this file's source and passes it to
a fresh interpreter. Protocol: stdin carries one JSON config line followed by the program source;
``cfg["status_fd"]`` is a pipe to the parent on which this code (and only this code: the program
never holds the descriptor) writes JSON lines: first ``{"isolation": [...], ...}``, then, if the run
was stopped for memory, ``{"memory_exceeded": true}``.

Steps (each one recorded in the isolation report only if it succeeded):

1. die with the parent (``PR_SET_PDEATHSIG``), not dumpable, join the per-run cgroups the parent
   created (``cgroup``);
2. new namespaces: as root ``mount, pid, net, ipc, uts`` directly, otherwise inside a new user
   namespace (``user``) that maps only the caller's uid;
3. a new root: a size-limited tmpfs holding read-only bind mounts of the interpreter's directories
   (``/usr``, ``/lib*``, ``/bin``, ``/sbin``, the Python prefix), ``/dev/{null,zero,random,urandom}``,
   a fresh ``/proc``, and writable ``/tmp``, ``/dev/shm`` and ``/sandbox`` on the same tmpfs;
   ``pivot_root`` into it and detach the old root (``mount``);
4. PID 1 of the new PID namespace (``pid``) is this trusted code: it runs the program as its child
   under an unprivileged uid (``uid`` as root: a per-call uid with no groups; in a user namespace the
   mapped uid without capabilities), with ``PR_SET_NO_NEW_PRIVS`` and rlimits, polls memory when no
   cgroup accounts for it, and exits when the program's main process exits; the kernel then kills
   everything left in the namespace.
"""

import ctypes
import json
import os
import platform
import resource
import signal
import sys
import time

NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = (
    0x00020000,
    0x04000000,
    0x08000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
ST_FLAGS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: 1024, 2048: 2048}
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}
INNER_UID = 1000
ROOT = "/tmp"  # where the new root's tmpfs is assembled (inside the new mount namespace only)

libc = ctypes.CDLL(None, use_errno=True)


def enc(s):
    return None if s is None else s.encode()


def unshare(flags):
    try:
        return libc.unshare(ctypes.c_int(flags)) == 0
    except AttributeError:
        return False


def mount(src, dst, fstype, flags, data=None):
    try:
        res = libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data))
    except AttributeError:
        return False
    return res == 0


def prctl(option, arg):
    try:
        return libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) == 0
    except AttributeError:
        return False


def write_file(path, text):
    try:
        with open(path, "w") as f:
            f.write(text)
        return True
    except OSError:
        return False


def read_input():
    data = sys.stdin.buffer.read()
    head, _, program = data.partition(b"\n")
    return json.loads(head), program


def join_cgroups(cfg):
    joined = bool(cfg["cgroups"])
    for procs in cfg["cgroups"]:
        joined = write_file(procs, str(os.getpid())) and joined
    return joined


def new_namespaces(got):
    """Unshare; returns whether a user namespace was needed (its maps are written here)."""
    rest = NEWNS | NEWPID | NEWNET | NEWIPC | NEWUTS
    if os.geteuid() == 0 and unshare(rest):
        got.update(("mount", "pid", "net", "ipc"))
        return False
    uid, gid = os.geteuid(), os.getegid()
    if unshare(NEWUSER | rest):
        ok = write_file("/proc/self/setgroups", "deny")
        ok = write_file("/proc/self/uid_map", f"{INNER_UID} {uid} 1\n") and ok
        ok = write_file("/proc/self/gid_map", f"{INNER_UID} {gid} 1\n") and ok
        if ok:
            got.update(("user", "mount", "pid", "net", "ipc"))
        return True
    for flag, name in ((NEWNET, "net"), (NEWIPC, "ipc")):
        if unshare(flag):
            got.add(name)
    return False


def bind_ro(src, dst):
    """Read-only bind of ``src`` at ``dst``, keeping the source mount's locked flags."""
    if not (mount(src, dst, None, MS_BIND) or mount(src, dst, None, MS_BIND | MS_REC)):
        return False
    try:
        flags = os.statvfs(src).f_flag
    except OSError:
        flags = 0
    extra = MS_NOSUID | MS_NODEV
    for bit, ms in ST_FLAGS.items():
        if flags & bit:
            extra |= ms
    return mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | extra)


def build_root(cfg):
    """The new root under ROOT (tmpfs); True if every step worked."""
    lim = cfg["limits"]
    if not mount(None, "/", None, MS_REC | MS_PRIVATE):
        return False
    size = max(1 << 20, int(lim["memory_bytes"]))
    if not mount("tmpfs", ROOT, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0755"):
        return False
    for d in ("dev", "dev/shm", "proc", "tmp", "sandbox", "etc", ".oldroot"):
        os.makedirs(os.path.join(ROOT, d), exist_ok=True)
    os.chmod(os.path.join(ROOT, "tmp"), 0o1777)
    os.chmod(os.path.join(ROOT, "dev/shm"), 0o1777)
    ok = True
    for src in cfg["binds"]:
        dst = ROOT + src
        if os.path.islink(src):
            if not os.path.lexists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.symlink(os.readlink(src), dst)
            continue
        if not os.path.exists(src):
            continue
        if os.path.isdir(src):
            os.makedirs(dst, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            open(dst, "a").close()
        ok = bind_ro(src, dst) and ok
    for dev in ("null", "zero", "random", "urandom"):
        dst = os.path.join(ROOT, "dev", dev)
        open(dst, "a").close()
        ok = mount("/dev/" + dev, dst, None, MS_BIND) and ok
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0")):
        os.symlink(target, os.path.join(ROOT, "dev", name))
    os.symlink("/proc/self/fd/1", os.path.join(ROOT, "dev", "stdout"))
    os.symlink("/proc/self/fd/2", os.path.join(ROOT, "dev", "stderr"))
    return ok


def pivot(got):
    """Mount /proc (needs the new PID namespace), then pivot_root into ROOT and detach the old root."""
    if not mount("proc", os.path.join(ROOT, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC):
        return False
    os.chdir(ROOT)
    number = PIVOT_ROOT.get(platform.machine())
    if number is not None and libc.syscall(number, enc("."), enc(".oldroot")) == 0:
        os.chdir("/")
        if libc.umount2(enc("/.oldroot"), MNT_DETACH) != 0:
            return False
        os.rmdir("/.oldroot")
    else:  # switch_root: move the new root over "/" and chroot into it
        if not mount(ROOT, "/", None, 1 << 13):  # MS_MOVE
            return False
        os.chroot(".")
        os.chdir("/")
    got.add("mount")
    return True


def set_ipc_limits(limit):
    pages = max(1, limit // resource.getpagesize())
    for name, value in (("shmmax", limit), ("shmall", pages), ("shmmni", 64)):
        write_file(f"/proc/sys/kernel/{name}", str(value))


def exec_program(cfg, uid):
    """In the program's process: fds, rlimits, uid, then exec the interpreter."""
    lim = cfg["limits"]
    keep = [os.dup2(fd, 200 + i) for i, fd in enumerate(cfg["pass_fds"])]
    for i, fd in enumerate(keep):
        os.dup2(fd, 3 + i, inheritable=True)
    os.closerange(3 + len(keep), 1 << 16)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["nofile"], lim["nofile"]))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    # Counts every process of the uid (of the user namespace, where there is one): without a
    # dropped uid or a user namespace that includes the trainer's, so forking may fail outright.
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.chdir(cfg["cwd"])
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": cfg["cwd"], "TMPDIR": "/tmp"}
    prog = os.path.join(cfg["cwd"], "main.py")
    os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-B", prog], env)


def memory_in_use():
    """Resident memory of every process in this PID namespace plus tmpfs and SysV shm in use."""
    page = resource.getpagesize()
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != "1":
            try:
                with open(f"/proc/{entry}/statm") as f:
                    total += int(f.read().split()[1]) * page
            except (OSError, ValueError, IndexError):
                pass
    try:
        st = os.statvfs("/")
        total += (st.f_blocks - st.f_bfree) * st.f_frsize
    except OSError:
        pass
    try:
        with open("/proc/sysvipc/shm") as f:
            next(f)
            for line in f:
                total += int(line.split()[3])
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return total


def supervise(pid, status, cfg, poll_memory):
    """Reap children until the program's main process ``pid`` exits; return its exit code."""
    limit = cfg["limits"]["memory_bytes"]
    while True:
        try:
            done, st = os.waitpid(-1, os.WNOHANG if poll_memory else 0)
        except ChildProcessError:
            return 127
        if done == pid:
            return os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)
        if done == 0:
            if memory_in_use() > limit:
                os.kill(-1, signal.SIGKILL)  # every process of the namespace but this one
                status.write(json.dumps({"memory_exceeded": True}) + "\n")
                status.flush()
            time.sleep(0.005)


def main():
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.umask(0o022)  # the program (another uid) must be able to read main.py whatever the caller's
    cfg, program = read_input()
    if os.getppid() != cfg["parent_pid"]:
        os._exit(1)
    status = os.fdopen(cfg["status_fd"], "w")
    got = set()
    if cfg["isolate"]:
        if join_cgroups(cfg):
            got.add("cgroup")
        in_userns = new_namespaces(got)
    else:
        in_userns = False
    prctl(PR_SET_DUMPABLE, 0)  # after the uid / gid maps: they need a dumpable process
    if os.geteuid() == 0 and not in_userns and cfg["uid"] is not None:
        uid = cfg["uid"]
    else:
        uid = None
    rooted = "mount" in got and "pid" in got and build_root(cfg)
    got.discard("mount")  # claimed only once the new root is in place (pivot)
    child = os.fork() if "pid" in got else 0
    if child:  # the launcher: wait for PID 1 of the namespace, exit like it
        status.close()
        _, st = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))
    # PID 1 of the new namespace (or, without one, the launcher itself).
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if rooted and pivot(got):
        cfg["cwd"] = "/sandbox"
        if uid is not None or in_userns:
            os.chown("/sandbox", uid if uid is not None else INNER_UID, -1)
        set_ipc_limits(cfg["limits"]["memory_bytes"])
    else:
        cfg["cwd"] = cfg["workdir"]
        if not cfg["uid_without_mount"]:  # the interpreter is not reachable by another uid
            uid = None
        if uid is not None:
            os.chown(cfg["workdir"], uid, uid)
    if uid is not None:
        got.add("uid")
    with open(os.path.join(cfg["cwd"], "main.py"), "wb") as f:
        f.write(program)
    missing = sorted(set(cfg["require"]) - got)
    status.write(json.dumps({"isolation": sorted(got), "uid": uid, "missing": missing}) + "\n")
    status.flush()
    if missing:
        os._exit(0)
    if "pid" not in got:  # no namespace to supervise: the launcher becomes the program
        status.close()
        exec_program(cfg, uid)
    pid = os.fork()
    if pid == 0:
        try:
            status.close()
            exec_program(cfg, uid)
        finally:
            os._exit(127)
    code = supervise(pid, status, cfg, poll_memory="cgroup" not in got)
    status.close()
    os._exit(code)


main()
