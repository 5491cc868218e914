"""The sandbox: which kernel layers confine task processes here, and each worker's plan.

At start the server probes what the host allows (:meth:`Sandbox.detect`), by running the
launcher (``runner/confine.py``) once per layer; the result is logged, shown in
``/health`` and in a metric. Each worker then gets a :class:`WorkerLaunch`: the launcher
command with a plan of the layers in force, its own scratch directory, user id and
cgroup, and the limits of its task (server default, ``task_metadata.json``, admin ceiling).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from task_framework.runner import confine
from task_framework.runner.base import NETWORKS, RESOURCE_KEYS, Network, TaskResources

SandboxMode = Literal["auto", "strict", "off"]
WorkerReuse = Literal["owner", "task", "never"]
RESOURCE_BOUND = 10**7
"""No resource value in task metadata may exceed this (before the admin ceiling applies)."""
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
TMP_MB = 256
"""Size of each worker's private /tmp and /dev/shm (tmpfs, counted in its memory)."""
OPEN_FILES = 4096
PROBE_TIMEOUT_SECONDS = 20.0
UID_RANGE = 4096
"""As root, task processes run as uid/gid ``uid_base + n`` with n below this."""

_log = logging.getLogger("task_framework.sandbox")
CONFINE = str(Path(confine.__file__).resolve())


class SandboxUnavailable(RuntimeError):
    """``TASK_FRAMEWORK_SANDBOX=strict`` and a layer is missing."""


# -- limits ------------------------------------------------------------------------------
def parse_resources(raw: dict[str, Any]) -> TaskResources:
    """``resources`` and ``network`` of ``task_metadata.json``; ValueError names the fault."""
    values: dict[str, Any] = {}
    resources = raw.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            raise ValueError("task metadata field 'resources' must be an object")
        unknown = sorted(set(resources) - set(RESOURCE_KEYS))
        if unknown:
            raise ValueError(
                f"task metadata 'resources' has unknown keys {unknown}; "
                f"known: {list(RESOURCE_KEYS)}"
            )
        for key, value in resources.items():
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not (1 <= value <= RESOURCE_BOUND)
            ):
                raise ValueError(
                    f"task metadata 'resources.{key}' must be an integer from 1 to {RESOURCE_BOUND}"
                )
            values[key] = value
    network = raw.get("network")
    if network is not None:
        if network not in NETWORKS:
            raise ValueError("task metadata field 'network' must be 'none' or 'outbound'")
        values["network"] = network
    return TaskResources(**values)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one task's processes get (0: no limit)."""

    memory_mb: int
    cpu_seconds: int
    max_processes: int
    timeout_seconds: int
    network: Network
    open_files: int = OPEN_FILES


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """Server defaults and admin ceilings (0: none); task metadata sits in between."""

    memory_mb: int = 2048
    max_memory_mb: int = 0
    cpu_seconds: int = 3600
    max_cpu_seconds: int = 0
    processes: int = 256
    max_processes: int = 0
    timeout_seconds: int = 3600
    max_timeout_seconds: int = 0
    network: Network = "outbound"
    allow_outbound: bool = True

    def resolve(self, wanted: TaskResources) -> Limits:
        def pick(asked: int | None, default: int, ceiling: int) -> int:
            value = default if asked is None else asked
            if ceiling and (value == 0 or value > ceiling):
                return ceiling
            return value

        network = wanted.network or self.network
        if network == "outbound" and not self.allow_outbound:
            network = "none"
        return Limits(
            memory_mb=pick(wanted.memory_mb, self.memory_mb, self.max_memory_mb),
            cpu_seconds=pick(wanted.cpu_seconds, self.cpu_seconds, self.max_cpu_seconds),
            max_processes=pick(wanted.max_processes, self.processes, self.max_processes),
            timeout_seconds=pick(
                wanted.timeout_seconds, self.timeout_seconds, self.max_timeout_seconds
            ),
            network=network,
        )

    def wall_limit(self, wanted: TaskResources, asked: float | None) -> float | None:
        """The wall-time limit of a thread: its own ``timeout_seconds`` or the task's
        default, never over the ceiling; None for no limit."""
        value = asked if asked is not None else self.resolve(wanted).timeout_seconds
        if self.max_timeout_seconds and (not value or value > self.max_timeout_seconds):
            value = self.max_timeout_seconds
        return value or None


# -- layers ------------------------------------------------------------------------------
@dataclass(slots=True)
class Layers:
    """The confinement layers this host allows (detected once, at start)."""

    pid_namespace: bool = False
    user_namespace: bool = False
    filesystem_view: bool = False
    network_namespace: bool = False
    landlock_abi: int = 0
    no_new_privs: bool = False
    separate_uid: bool = False
    cgroup: str | None = None
    rlimits: bool = False
    reasons: dict[str, str] = field(default_factory=dict)

    def in_force(self) -> list[str]:
        flags = {
            "pid_namespace": self.pid_namespace,
            "user_namespace": self.user_namespace,
            "filesystem_view": self.filesystem_view,
            "network_namespace": self.network_namespace,
            "landlock": bool(self.landlock_abi),
            "no_new_privs": self.no_new_privs,
            "separate_uid": self.separate_uid,
            "cgroup": bool(self.cgroup),
            "rlimits": self.rlimits,
        }
        return [name for name, on in flags.items() if on]

    def required_missing(self) -> list[str]:
        """Layers strict mode insists on that are not in force."""
        needed = ["pid_namespace", "filesystem_view", "network_namespace", "landlock"]
        needed += ["no_new_privs", "rlimits"]
        needed.append("separate_uid" if os.geteuid() == 0 else "user_namespace")
        have = set(self.in_force())
        return [name for name in needed if name not in have]


def _cgroup_bases() -> tuple[str | None, list[Path]]:
    """(kind, directories under which per-worker cgroups for memory and pids can be made)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None, []
    v1: dict[str, Path] = {}
    v2_root: Path | None = None
    for line in mounts:
        pre, _, post = line.partition(" - ")
        fields, extra = pre.split(), post.split()
        if len(fields) < 5 or not extra:
            continue
        if extra[0] == "cgroup2" and v2_root is None:
            v2_root = Path(fields[4])
        elif extra[0] == "cgroup" and len(extra) >= 3:
            for option in extra[2].split(","):
                if option in ("memory", "pids"):
                    v1[option] = Path(fields[4])
    paths = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(","):
            paths[name or "unified"] = path.lstrip("/")
    if {"memory", "pids"} <= set(v1) and {"memory", "pids"} <= set(paths):
        bases = [v1["memory"] / paths["memory"], v1["pids"] / paths["pids"]]
        if all(_can_make_child(base) for base in bases):
            return "v1", bases
    if v2_root is not None and "unified" in paths:
        base = v2_root / paths["unified"]
        try:
            enabled = (base / "cgroup.subtree_control").read_text().split()
        except OSError:
            enabled = []
        if {"memory", "pids"} <= set(enabled) and _can_make_child(base):
            return "v2", [base]
    return None, []


class NotShared(OSError):
    """A task folder that the worker's own user may not read."""


def _check_shared(folder: Path) -> None:
    """Workers of a root server run as another user: the folder must be open to others
    (files of the data directory are; a ``--dev-task`` folder may not be)."""
    try:
        mode = folder.stat().st_mode
    except OSError as exc:
        raise NotShared(f"cannot read {folder}: {exc.strerror}") from exc
    if mode & 0o005 != 0o005:
        raise NotShared(
            f"{folder} (mode {mode & 0o777:o}) is not readable by the sandbox's worker user: "
            f"make it readable to others (chmod -R o+rX {folder})"
        )


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _can_make_child(base: Path) -> bool:
    probe = base / f"tf-probe-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        return False
    return True


# -- one worker ------------------------------------------------------------------------
@dataclass(slots=True)
class WorkerLaunch:
    """How one worker process is started and what is cleaned up after it."""

    argv_prefix: list[str]
    scratch: Path
    limits: Limits
    pid_namespace: bool
    cgroups: list[Path] = field(default_factory=list)
    cgroup_kind: str | None = None
    uid: int | None = None
    _release_uid: Any = None

    @property
    def expected_ppid_is_zero(self) -> bool:
        """PID 1 of its own namespace sees its parent (outside it) as pid 0."""
        return self.pid_namespace

    def memory_exceeded(self) -> bool:
        """The kernel killed something of this worker for its cgroup memory limit."""
        if not self.cgroups or not self.limits.memory_mb:
            return False
        memory = self.cgroups[0]
        try:
            if self.cgroup_kind == "v2":
                for line in (memory / "memory.events").read_text().splitlines():
                    name, _, value = line.partition(" ")
                    if name == "oom_kill" and int(value) > 0:
                        return True
                return False
            for line in (memory / "memory.oom_control").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill" and int(value) > 0:
                    return True
            return False
        except (OSError, ValueError):
            return False

    def cleanup(self) -> None:
        for group in self.cgroups:
            with contextlib.suppress(OSError):
                group.rmdir()
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self._release_uid is not None:
            self._release_uid()
            self._release_uid = None


class Sandbox:
    """Detects the host's layers once and plans each worker's confinement."""

    def __init__(
        self,
        mode: SandboxMode = "auto",
        *,
        data_dir: Path,
        policy: LimitPolicy | None = None,
        uid_base: int = 200000,
    ) -> None:
        self.mode: SandboxMode = mode
        self.data_dir = data_dir.resolve()
        self.policy = policy or LimitPolicy()
        self.uid_base = uid_base
        self.layers = Layers()
        self._detected = False
        self._cgroup_bases: list[Path] = []
        self._uids_in_use: set[int] = set()
        self._scratch: Path | None = None

    # -- detection -----------------------------------------------------------------------
    @property
    def detected(self) -> bool:
        return self._detected

    def detect(self) -> Layers:
        """Probe each layer (once); in strict mode raise SandboxUnavailable if one is missing."""
        if self._detected:
            return self.layers
        self._detected = True
        layers = self.layers = Layers()
        if self.mode == "off":
            _log.warning(
                "TASK_FRAMEWORK_SANDBOX=off: task code runs UNCONFINED with the server's "
                "rights (it can read the server's data and keys); use this for debugging only"
            )
            return layers
        if not sys.platform.startswith("linux"):
            layers.reasons["all"] = f"not Linux ({sys.platform})"
            return self._settle(layers)
        root = os.geteuid() == 0
        ns: dict[str, Any] = {"pid_ns": True, "user_ns": not root}
        view = {**ns, **self._view_paths([], [])}
        plans: dict[str, dict[str, Any]] = {
            "rlimits": {"rlimits": {"core": 0}},
            "no_new_privs": {},
            "pid_namespace": ns,
            "filesystem_view": view,
            "network_namespace": {**ns, "net_ns": True},
        }
        abi = confine.landlock_abi()
        if abi:
            plans["landlock"] = {"landlock": True, **self._probe_paths()}
        else:
            layers.reasons["landlock"] = "the kernel offers no Landlock (Linux 5.13+, enabled LSM)"
        if root:
            plans["separate_uid"] = {**view, "uid": self.uid_base, "gid": self.uid_base}
        # The probes are independent processes: run them side by side.
        with ThreadPoolExecutor(len(plans)) as pool:
            outcomes = pool.map(lambda item: self._probe(layers, *item), plans.items())
            ok = dict(zip(plans, outcomes, strict=True))
        layers.rlimits = ok["rlimits"]
        layers.no_new_privs = ok["no_new_privs"]
        layers.pid_namespace = ok["pid_namespace"]
        layers.user_namespace = layers.pid_namespace and not root
        layers.filesystem_view = layers.pid_namespace and ok["filesystem_view"]
        layers.network_namespace = layers.pid_namespace and ok["network_namespace"]
        layers.landlock_abi = abi if ok.get("landlock") else 0
        if root:
            layers.separate_uid = layers.filesystem_view and ok["separate_uid"]
            if not layers.filesystem_view:
                layers.reasons["separate_uid"] = (
                    "needs the filesystem view (task files lie in root's private directories)"
                )
        kind, bases = _cgroup_bases()
        if kind is None:
            layers.reasons["cgroup"] = (
                "no writable cgroup with memory and pids controllers; memory is limited "
                "with RLIMIT_AS and a watch of resident memory instead"
            )
        layers.cgroup, self._cgroup_bases = kind, bases
        return self._settle(layers)

    def _settle(self, layers: Layers) -> Layers:
        missing = layers.required_missing()
        if missing:
            detail = "; ".join(f"{name}: {why}" for name, why in layers.reasons.items())
            if self.mode == "strict":
                raise SandboxUnavailable(
                    f"TASK_FRAMEWORK_SANDBOX=strict but these layers are unavailable: "
                    f"{', '.join(missing)} ({detail})"
                )
            _log.warning(
                "task sandbox: layers unavailable on this host: %s (%s)",
                ", ".join(missing),
                detail,
            )
        _log.info("task sandbox layers in force: %s", ", ".join(layers.in_force()) or "none")
        return layers

    def _probe_paths(self) -> dict[str, Any]:
        return {"read_only": self._system_paths(), "read_write": [str(self._scratch_root())]}

    def _scratch_root(self) -> Path:
        """``<DATA_DIR>/scratch/<pid>-<token>``: this process's workers' scratch folders.

        Made once; folders left by processes that are gone (a crash, ``kill -9``) are
        removed then. Several processes may share the data directory.
        """
        if self._scratch is None:
            parent = self.data_dir / "scratch"
            parent.mkdir(parents=True, exist_ok=True)
            for old in parent.iterdir():
                pid, _, _ = old.name.partition("-")
                if pid.isdigit() and not _process_exists(int(pid)):
                    shutil.rmtree(old, ignore_errors=True)
            self._scratch = parent / f"{os.getpid()}-{secrets.token_hex(4)}"
            self._scratch.mkdir(mode=0o700)
        return self._scratch

    def _view_paths(self, read_only: list[str], read_write: list[str]) -> dict[str, Any]:
        view = self.data_dir / "sandbox-root"
        view.mkdir(parents=True, exist_ok=True)
        os.chmod(view, 0o700)
        base = self._probe_paths()
        return {
            "view": str(view),
            "read_only": base["read_only"] + read_only,
            "read_write": read_write or base["read_write"],
        }

    def _probe(self, layers: Layers, name: str, plan: dict[str, Any]) -> bool:
        full = {**plan, "parent_pid": os.getpid(), "probe": True}
        argv = [sys.executable, "-I", "-S", CONFINE, confine.dumps(full), "--", "/bin/true"]
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                timeout=PROBE_TIMEOUT_SECONDS,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            layers.reasons[name] = str(exc)
            return False
        if result.returncode != 0:
            text = result.stderr.decode(errors="replace").strip().splitlines()
            layers.reasons[name] = text[-1] if text else f"exit status {result.returncode}"
            return False
        return True

    @staticmethod
    def _system_paths() -> list[str]:
        paths = [p for p in SYSTEM_PATHS if os.path.lexists(p)]
        for key in ("stdlib", "platstdlib", "purelib", "platlib", "include", "scripts"):
            with contextlib.suppress(KeyError):
                paths.append(sysconfig.get_paths()[key])
        paths += [sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))]
        return list(dict.fromkeys(os.path.normpath(p) for p in paths))

    # -- health --------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        layers = self.layers
        return {
            "mode": self.mode,
            "layers": layers.in_force(),
            "missing": [] if self.mode == "off" else layers.required_missing(),
            "landlock_abi": layers.landlock_abi,
            "cgroup": layers.cgroup,
        }

    # -- one worker ----------------------------------------------------------------------
    def prepare(
        self,
        *,
        code_dir: Path,
        env_path: Path,
        sdk_path: Path,
        limits: Limits,
    ) -> WorkerLaunch:
        """A scratch directory, user id, cgroups and the launcher command for one worker."""
        layers = self.detect()
        scratch = self._scratch_root() / secrets.token_hex(8)
        scratch.mkdir(mode=0o700)
        if self.mode == "off":
            return WorkerLaunch([], scratch, limits, pid_namespace=False)
        if layers.separate_uid:
            for path in (code_dir, env_path):
                _check_shared(path)
        uid = self._take_uid() if layers.separate_uid else None
        launch = WorkerLaunch(
            [],
            scratch,
            limits,
            pid_namespace=layers.pid_namespace,
            uid=uid,
            cgroup_kind=layers.cgroup,
        )
        if uid is not None:
            os.chown(scratch, uid, uid)
            launch._release_uid = lambda: self._uids_in_use.discard(uid)
        read_only = [str(code_dir), str(env_path), str(sdk_path), *self._env_python(env_path)]
        plan: dict[str, Any] = {"parent_pid": os.getpid()}
        if layers.pid_namespace:
            plan.update(pid_ns=True, user_ns=layers.user_namespace)
        if layers.network_namespace and limits.network == "none":
            plan["net_ns"] = True
        if layers.filesystem_view:
            plan.update(self._view_paths(read_only, [str(scratch)]))
            plan["tmp_mb"] = TMP_MB
        else:
            plan["read_only"] = self._system_paths() + read_only
            plan["read_write"] = [str(scratch), "/dev/shm"]  # noqa: S108 (multiprocessing)
        if layers.landlock_abi:
            plan["landlock"] = True
        if layers.rlimits:
            plan["rlimits"] = self._rlimits(limits, layers)
        if uid is not None:
            plan.update(uid=uid, gid=uid)
        plan["drop_caps"] = True
        plan["cwd"] = str(scratch)
        if layers.cgroup and self._cgroup_bases:
            launch.cgroups = self._make_cgroups(layers.cgroup, limits)
            plan["cgroups"] = [str(group / "cgroup.procs") for group in launch.cgroups]
        launch.argv_prefix = [sys.executable, "-I", "-S", CONFINE, confine.dumps(plan), "--"]
        return launch

    def _rlimits(self, limits: Limits, layers: Layers) -> dict[str, int]:
        rlimits = {"core": 0, "nofile": limits.open_files}
        if limits.max_processes and layers.separate_uid:
            # RLIMIT_NPROC counts every process of the real uid: only meaningful when the
            # worker has a uid of its own (as root); the pids cgroup covers the rest.
            rlimits["nproc"] = limits.max_processes
        if limits.memory_mb and not layers.cgroup:
            # Address space, not resident memory: generous, the RSS watch is the real limit.
            rlimits["as"] = max(limits.memory_mb * 4, 1024) * 1024 * 1024
        return rlimits

    def _make_cgroups(self, kind: str, limits: Limits) -> list[Path]:
        name = f"tf-worker-{secrets.token_hex(6)}"
        groups = []
        memory = limits.memory_mb * 1024 * 1024
        try:
            for base in self._cgroup_bases:
                group = base / name
                group.mkdir()
                groups.append(group)
            if kind == "v2":
                group = groups[0]
                if memory:
                    (group / "memory.max").write_text(str(memory))
                    with contextlib.suppress(OSError):
                        (group / "memory.swap.max").write_text("0")
                if limits.max_processes:
                    (group / "pids.max").write_text(str(limits.max_processes))
            else:
                if memory:
                    (groups[0] / "memory.limit_in_bytes").write_text(str(memory))
                if limits.max_processes:
                    (groups[1] / "pids.max").write_text(str(limits.max_processes))
        except OSError:
            for group in groups:
                with contextlib.suppress(OSError):
                    group.rmdir()
            raise
        return groups

    def _take_uid(self) -> int:
        for offset in range(UID_RANGE):
            uid = self.uid_base + offset
            if uid not in self._uids_in_use:
                self._uids_in_use.add(uid)
                return uid
        raise RuntimeError("no free sandbox user id")

    @staticmethod
    def _env_python(env_path: Path) -> list[str]:
        """The Python installation an environment's interpreter lives in."""
        paths = []
        try:
            for line in (env_path / "pyvenv.cfg").read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "home" and value.strip():
                    home = Path(value.strip())
                    paths.append(str(home.parent))
                    paths.append(str(home.resolve().parent))
        except OSError:
            pass
        with contextlib.suppress(OSError):
            paths.append(str((env_path / "bin" / "python").resolve().parent.parent))
        return list(dict.fromkeys(paths))


__all__ = [
    "Layers",
    "LimitPolicy",
    "Limits",
    "Sandbox",
    "SandboxMode",
    "SandboxUnavailable",
    "TaskResources",
    "WorkerLaunch",
    "WorkerReuse",
    "parse_resources",
]
