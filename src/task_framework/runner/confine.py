"""The worker launcher: confine a process with the kernel's own means, then exec the worker.

Run by the server as ``<server python> -I -S confine.py <plan> -- <worker argv>``, so
no code of the task's environment (not even a ``.pth`` file) runs before the confinement
is in force. Standard library only; nothing here imports ``task_framework``.

The plan (built by ``runner/sandbox.py``) says which layers to apply. In order:

1. ``unshare`` new PID, mount and IPC namespaces (a new user namespace first when not
   root; a new network namespace for ``network: "none"``), then ``fork``: the child is
   PID 1 of its namespace, so when it exits the kernel kills every process left in it,
   ``setsid`` or not. This process stays outside, waits for it and exits as it did.
2. The child joins its cgroups (memory, pids), builds a filesystem view (a tmpfs holding
   read-only binds of the system, the Python installation, the task's code, environment
   and SDK, a read-write bind of its scratch directory, a private ``/tmp``, ``/dev/shm``,
   a minimal ``/dev`` and its own ``/proc``) and ``chroot``s into it.
3. Resource limits, then no privileges: every capability out of the bounding set, another
   user id (as root), ``no_new_privs``.
4. Landlock: read-only access to the same paths, read-write to scratch and temp only; no
   signals or abstract sockets outside the sandbox.
5. ``execve`` of the worker, with the scratch directory as working directory.

A step the plan asks for that fails makes the launcher exit with status 121 and a line on
stderr naming the step: the server never runs a task with fewer layers than it reported.
"""

from __future__ import annotations

import ctypes
import marshal
import os
import resource
import signal
import stat
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

FAILED_STATUS = 121
MAX_FD = 65536
PROBE_STATUS = 0

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
ST_RDONLY = 1
ST_RELATIME = 4096

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CAP_LAST_CAP_FALLBACK = 40

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

RLIMITS = {
    "as": resource.RLIMIT_AS,
    "cpu": resource.RLIMIT_CPU,
    "nproc": resource.RLIMIT_NPROC,
    "nofile": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE,
    "fsize": resource.RLIMIT_FSIZE,
}

DEVICES = ("null", "zero", "full", "random", "urandom")
LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)

# The interpreter's own symbols include libc's (find_library would run ldconfig: slow).
_libc = ctypes.CDLL(None, use_errno=True)


class ConfineError(Exception):
    """A layer the plan asked for could not be applied."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise ConfineError(f"{what}: {os.strerror(errno)}")
    return result


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    result = _libc.mount(
        source.encode() if source is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    _check(result, f"mount {source or fstype} on {target}")


# -- Landlock ----------------------------------------------------------------------------
def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or it is disabled)."""
    result = _libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, 0, LANDLOCK_CREATE_RULESET_VERSION
    )
    return max(int(result), 0)


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # EXECUTE .. MAKE_SYM (ABI 1)
    if abi >= 2:
        rights |= 1 << 13  # REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def apply_landlock(read_only: list[str], read_write: list[str], devices: list[str]) -> int:
    """Allow only these hierarchies from now on (for this process and its children)."""
    abi = landlock_abi()
    if abi < 1:
        raise ConfineError("landlock: not supported by this kernel")
    handled = _fs_rights(abi)
    attr = _RulesetAttr(handled_access_fs=handled)
    size = 8
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = ctypes.sizeof(_RulesetAttr)
    ruleset = _check(
        _libc.syscall(
            ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), 0
        ),
        "landlock_create_ruleset",
    )
    file_rights = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (FS_TRUNCATE if abi >= 3 else 0)
    read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    device = read | FS_WRITE_FILE | (FS_IOCTL_DEV if abi >= 5 else 0)
    try:
        for paths, rights in ((read_only, read), (read_write, handled), (devices, device)):
            for path in paths:
                _landlock_rule(ruleset, path, rights & handled, file_rights)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _check(
            _libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ruleset, 0),
            "landlock_restrict_self",
        )
    finally:
        os.close(ruleset)
    return abi


def _landlock_rule(ruleset: int, path: str, rights: int, file_rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= file_rights
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        _check(
            _libc.syscall(
                ctypes.c_long(SYS_LANDLOCK_ADD_RULE),
                ruleset,
                LANDLOCK_RULE_PATH_BENEATH,
                ctypes.byref(rule),
                0,
            ),
            f"landlock_add_rule {path}",
        )
    finally:
        os.close(fd)


# -- filesystem view ---------------------------------------------------------------------
def _remount_flags(path: str, writable: bool) -> int:
    """Flags for the read-only (or not) remount of a bind, keeping the source's own locks."""
    have = os.statvfs(path).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY)
    flags |= have & (ST_RDONLY | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    if have & ST_RELATIME:
        flags |= MS_RELATIME
    return flags


def _expose(root: str, path: str, *, writable: bool, bound: list[str]) -> None:
    """Make ``path`` (and what its symlinks point to) exist in the view under ``root``."""
    path = os.path.normpath(path)
    if not os.path.lexists(path) or any(
        path == done or path.startswith(done.rstrip("/") + "/") for done in bound
    ):
        return
    # A symlinked parent (``/lib`` -> ``usr/lib``) is recreated as a link, then followed.
    parent = os.path.dirname(path)
    real_parent = os.path.realpath(parent)
    if real_parent != parent:
        _expose(root, parent, writable=False, bound=bound)
        real = os.path.join(real_parent, os.path.basename(path))
        _expose(root, real, writable=writable, bound=bound)
        return
    target = root + path
    if os.path.islink(path):
        link = os.readlink(path)
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(link, target)
        bound.append(path)
        _expose(root, os.path.join(parent, link), writable=writable, bound=bound)
        return
    if os.path.isdir(path):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if not os.path.exists(target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(path, target, None, MS_BIND | MS_REC)
    _mount(None, target, None, _remount_flags(path, writable))
    bound.append(path)


def build_view(root: str, read_only: list[str], read_write: list[str], tmp_mb: int) -> None:
    """A tmpfs at ``root`` with only what the worker may see; the caller chroots into it."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m")
    # Private temp space first: the binds below may lie under /tmp on the host.
    dev = root + "/dev"
    os.makedirs(dev, mode=0o755)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name in DEVICES:
        os.close(os.open(f"{dev}/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
        _mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for name, target in LINKS:
        os.symlink(target, f"{dev}/{name}")
    for place in (dev + "/shm", root + "/tmp"):
        os.makedirs(place, exist_ok=True)
        _mount("tmpfs", place, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={tmp_mb}m")
    os.makedirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    bound: list[str] = []
    for path in read_only:
        _expose(root, path, writable=False, bound=bound)
    for path in read_write:
        _expose(root, path, writable=True, bound=bound)


# -- privileges --------------------------------------------------------------------------
def _drop_bounding_set() -> None:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            last = int(handle.read())
    except OSError:
        last = CAP_LAST_CAP_FALLBACK
    for cap in range(last + 1):
        _prctl(PR_CAPBSET_DROP, cap)


def _map_user(uid: int, gid: int) -> None:
    """In a fresh user namespace: be the same uid and gid as outside, nothing more."""
    with open("/proc/self/setgroups", "w") as handle:
        handle.write("deny")
    with open("/proc/self/uid_map", "w") as handle:
        handle.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as handle:
        handle.write(f"{gid} {gid} 1")


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent goes; ``parent`` is what getppid() says now (0 for a PID 1)."""
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:
        os._exit(FAILED_STATUS)


# -- the two halves ----------------------------------------------------------------------
def _confine_child(plan: dict[str, Any], outer: int) -> None:
    _die_with_parent(outer)
    for procs in plan.get("cgroups", []):
        with open(procs, "w") as handle:
            handle.write("0")
    view = plan.get("view")
    if view:
        build_view(view, plan["read_only"], plan["read_write"], int(plan.get("tmp_mb", 64)))
        os.chdir(view)
        os.chroot(".")
        os.chdir("/")
    for name, value in plan.get("rlimits", {}).items():
        resource.setrlimit(RLIMITS[name], (int(value), int(value)))
    if plan.get("drop_caps"):
        _drop_bounding_set()
    uid = plan.get("uid")
    if uid is not None:
        gid = int(plan["gid"])
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(int(uid), int(uid), int(uid))
        _die_with_parent(outer)  # a change of credentials clears the parent-death signal
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if plan.get("landlock"):
        # The view's own /proc (of its PID namespace) and tmpfs mounts; without the view,
        # only the worker's own /proc entry.
        own = ["/proc"] if view else ["/proc/self"]
        private = ["/dev/shm"] if view else []
        exposed = plan["read_only"] + plan["read_write"]
        if view and not any(path == "/tmp" or path.startswith("/tmp/") for path in exposed):
            # Not when binds live under /tmp (a data directory there): their skeleton
            # directories in the private /tmp must not become writable.
            private.append("/tmp")
        # Only the harmless devices, also outside the view (where /dev is the host's).
        devices = [f"/dev/{name}" for name in DEVICES]
        apply_landlock(plan["read_only"] + own, plan["read_write"] + private, devices)


def _wait_as_outer(child: int) -> None:
    """Stay outside the namespace until the child ends, then end the same way."""

    def forward(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 (contextlib would cost the launcher an import)
            os.kill(child, signum)
        except ProcessLookupError:
            pass  # it has just ended: waitpid below reports how

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(FAILED_STATUS)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else FAILED_STATUS)


def launch(plan: dict[str, Any], argv: list[str]) -> None:
    parent = int(plan["parent_pid"])
    _die_with_parent(parent)
    flags = 0
    if plan.get("pid_ns"):
        flags |= CLONE_NEWPID | CLONE_NEWIPC
    if plan.get("view"):
        flags |= CLONE_NEWNS
    if plan.get("net_ns"):
        flags |= CLONE_NEWNET
    if plan.get("user_ns"):
        flags |= CLONE_NEWUSER
    uid, gid = os.getuid(), os.getgid()
    if flags:
        _check(_libc.unshare(ctypes.c_int(flags)), "unshare")
    if plan.get("user_ns"):
        _map_user(uid, gid)
    if flags & CLONE_NEWPID:
        child = os.fork()
        if child:
            os.closerange(3, MAX_FD)  # the worker's socket and pipes are the child's alone
            _wait_as_outer(child)
        _confine_child(plan, os.getppid())  # 0: the outer process is not in our namespace
    else:
        _confine_child(plan, parent)
    if plan.get("probe"):
        os._exit(PROBE_STATUS)
    os.chdir(plan.get("cwd") or "/")
    os.execv(argv[0], argv)


def dumps(plan: dict[str, Any]) -> str:
    """The plan as one argument: marshal (no import needed to read it), in hex.

    Written and read by the same interpreter (the server's), so the format always agrees.
    """
    return marshal.dumps(plan).hex()


def loads(text: str) -> dict[str, Any]:
    plan = marshal.loads(bytes.fromhex(text))  # noqa: S302 (written by our own parent)
    if not isinstance(plan, dict):
        raise ValueError("the plan is not a mapping")
    return plan


def main() -> None:
    args = sys.argv[1:]
    try:
        split = args.index("--")
        plan = loads(args[0])
        launch(plan, args[split + 1 :])
    except (ConfineError, OSError, ValueError, KeyError, EOFError, TypeError) as exc:
        where = ""
        if exc.__traceback__ is not None:
            tb = exc.__traceback__
            while tb.tb_next is not None:
                tb = tb.tb_next
            where = f" (in {tb.tb_frame.f_code.co_name})"
        sys.stderr.write(f"task-framework sandbox: {exc}{where}\n")
        sys.stderr.flush()
        os._exit(FAILED_STATUS)


if __name__ == "__main__":
    main()
