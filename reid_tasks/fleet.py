"""Accelerator fleet: which devices each host has, and an exclusive lease on one of them while it benchmarks.

A device is a host and an id: device 0 on two hosts are two devices. The deployment declares them::

    VALIDATION.ASCEND.HOSTS: ["npu-a: 0,1,2,3", "npu-b: 0,1,2,3"]   # host: device ids
    VALIDATION.ASCEND.DEVICE_IDS: [0, 1, 2, 3]                        # ids a run may use (a filter)

With HOSTS empty the fleet is one host -- whichever worker runs the task -- with DEVICE_IDS (the embedded and
single-host set-up). Airflow cannot map a task's ``pool``, so the schedule is split in three parts
(docs/deployment.md, "Fleet"): one pool whose slots = the fleet's device count caps the benchmarks running at
once; each host's Celery worker runs with concurrency = its device count; and on the worker a benchmark takes
a ``DeviceLease`` here -- an exclusive ``flock`` on ``<LEASE_DIR>/<host>-dev<id>.lock`` that the kernel drops
when the holding process dies (a killed task never strands a device), then checks the device is idle
(``npu-smi``: nobody outside the lease uses it). Leases are logged (``lease.log``, one JSON line per acquire
and release) so an operator, and the tests, can see who held which device when.

    fleet = Fleet.from_cfg(cfg)
    with acquire_device(fleet.local_devices(), lease_dir(cfg), probe=target.device_state) as lease:
        target.run(artifact, cache, device_id=lease.device.id)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, DeviceBusyError, TargetError

log = logging.getLogger("reid_tasks.fleet")

#: the host key of a fleet declared without VALIDATION.ASCEND.HOSTS: whichever worker runs the task
ANY_HOST = ""
LEASE_LOG = "lease.log"
_ENTRY_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*:\s*([0-9,\s]+)$")

#: (idle, why) for a device id on this host; the Ascend target's answer comes from npu-smi
Probe = Callable[[int], tuple[bool, str]]


class FleetError(ConfigError):
    """The fleet declaration and what a run or worker asks of it disagree (undeclared device or host)."""


class LeaseError(TargetError):
    """A device lease file cannot be used (the error names the file)."""


def local_host() -> str:
    """This worker's name in the fleet: $REID_FLEET_HOST, else the machine's host name."""
    return os.environ.get("REID_FLEET_HOST") or socket.gethostname()


@dataclass(frozen=True, order=True)
class Device:
    """One accelerator: ``host`` + the id its tools take (``npu-smi``'s logical device id)."""

    host: str
    id: int

    def __str__(self) -> str:
        return f"{self.host}:{self.id}"


@dataclass(frozen=True)
class Fleet:
    """Device ids per host (``ANY_HOST`` when the fleet is "this worker's DEVICE_IDS")."""

    hosts: Mapping[str, tuple[int, ...]]

    @classmethod
    def parse(cls, entries: Sequence[str], device_ids: Sequence[int]) -> Fleet:
        """``["host: 0,1", ...]`` filtered to ``device_ids``; no entries: every worker has ``device_ids``.

        FleetError names the malformed entry, a host declared twice, or an id of ``device_ids`` that no
        host declares.
        """
        ids = tuple(int(d) for d in device_ids)
        if not entries:
            return cls({ANY_HOST: ids})
        hosts: dict[str, tuple[int, ...]] = {}
        for entry in entries:
            m = _ENTRY_RE.match(str(entry))
            if not m:
                raise FleetError(
                    f"VALIDATION.ASCEND.HOSTS entry {entry!r}: expected 'host: id[,id...]' (e.g. 'npu-a: 0,1,2,3')"
                )
            host, declared = m.group(1), tuple(int(t) for t in re.split(r"[,\s]+", m.group(2).strip()) if t)
            if host in hosts:
                raise FleetError(f"VALIDATION.ASCEND.HOSTS declares host {host!r} twice")
            hosts[host] = declared
        declared_ids = {i for v in hosts.values() for i in v}
        stray = [i for i in ids if i not in declared_ids]
        if stray:
            raise FleetError(
                f"device {', '.join(map(str, stray))} (VALIDATION.ASCEND.DEVICE_IDS / the run's device_ids) is not "
                f"declared by any host in VALIDATION.ASCEND.HOSTS ({_describe(hosts)})"
            )
        unused = sorted(str(Device(h, i)) for h, v in hosts.items() for i in v if i not in ids)
        if unused:
            log.info("fleet: devices %s are declared but not in DEVICE_IDS %s: not used", unused, list(ids))
        return cls({h: tuple(i for i in v if i in ids) for h, v in hosts.items()})

    @classmethod
    def from_cfg(cls, cfg: Any) -> Fleet:
        a = cfg.VALIDATION.ASCEND
        return cls.parse(list(a.HOSTS), list(a.DEVICE_IDS))

    @property
    def size(self) -> int:
        """Devices in the fleet (the slots of its Airflow pool)."""
        return sum(len(v) for v in self.hosts.values())

    @property
    def devices(self) -> list[Device]:
        return [Device(h, i) for h, ids in self.hosts.items() for i in ids]

    def local_devices(self, host: str | None = None) -> list[Device]:
        """The devices of ``host`` (default: this worker); FleetError when the fleet does not declare it."""
        host = host or local_host()
        if ANY_HOST in self.hosts:
            return [Device(host, i) for i in self.hosts[ANY_HOST]]
        if host not in self.hosts:
            raise FleetError(
                f"this worker's host {host!r} ($REID_FLEET_HOST or the host name) is not declared in "
                f"VALIDATION.ASCEND.HOSTS ({_describe(self.hosts)}): it must not consume the device queue"
            )
        return [Device(host, i) for i in self.hosts[host]]

    def describe(self) -> str:
        return _describe(self.hosts)


def _describe(hosts: Mapping[str, Sequence[int]]) -> str:
    return "; ".join(f"{h or '<any worker>'}: {','.join(map(str, v)) or '-'}" for h, v in hosts.items())


def device_pool(queue: str) -> str:
    """The Airflow pool of a device fleet serving ``queue``: one slot per device."""
    return f"{queue}_devices"


def lease_dir(cfg: Any) -> Path:
    """VALIDATION.ASCEND.LEASE_DIR, default ``<tmp>/reid-validate-leases``: local to the host (flock on NFS
    is unreliable and the devices are local anyway)."""
    value = str(cfg.VALIDATION.ASCEND.LEASE_DIR or "")
    return Path(value).expanduser() if value else Path(tempfile.gettempdir()) / "reid-validate-leases"


def lease_path(root: str | os.PathLike[str], device: Device) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", device.host) or "host"
    return Path(root) / f"{safe}-dev{device.id}.lock"


# ------------------------------------------------------------------------------------------------ lease
@dataclass
class DeviceLease:
    """An exclusive hold on one device; ``release()`` (or leaving the ``with`` block) gives it back."""

    device: Device
    path: Path
    label: str
    fd: int | None
    acquired_at: float
    waited_s: float
    previous: dict[str, Any] = field(default_factory=dict)  # the holder record the lock file had before

    def release(self) -> None:
        if self.fd is None:
            return
        _log_event(self.path.parent, "release", self.device, self.label)
        fd, self.fd = self.fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> DeviceLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def as_dict(self) -> dict[str, Any]:
        """What a perf record keeps of the lease."""
        return {"device_host": self.device.host, "device_id": self.device.id, "lease_wait_s": round(self.waited_s, 3)}


def _open_lock(path: Path, device: Device) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    except OSError as exc:
        raise LeaseError(f"cannot open the lease file of device {device}: {path}: {exc.strerror or exc}") from exc


def _holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _log_event(root: Path, event: str, device: Device, label: str) -> None:
    line = json.dumps(
        {"t": time.time(), "event": event, "host": device.host, "device": device.id, "pid": os.getpid(), "label": label}
    )
    fd = os.open(root / LEASE_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o664)
    try:
        os.write(fd, (line + "\n").encode())  # one write with O_APPEND: lines of concurrent holders never mix
    finally:
        os.close(fd)


def _try_lock(device: Device, root: Path, label: str, probe: Probe | None) -> tuple[DeviceLease | None, str]:
    path = lease_path(root, device)
    fd = _open_lock(path, device)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise LeaseError(f"cannot lock the lease file of device {device}: {path}: {exc.strerror}") from exc
        who = f"pid {holder.get('pid', '?')} ({holder.get('label', '?')})" if holder else "another process"
        return None, f"{device} leased by {who} ({path})"
    previous = _holder(fd)
    if previous and not _pid_alive(previous.get("pid")) and not previous.get("released"):
        log.warning(
            "fleet: lease file %s was left by pid %s (%s), which died holding it; the kernel released its lock",
            path,
            previous.get("pid"),
            previous.get("label"),
        )
    if probe is not None:
        idle, why = probe(device.id)
        if not idle:  # someone outside the lease (a manual run, a stuck process) uses the device
            _write_holder(fd, {"pid": os.getpid(), "label": label, "released": True, "t": time.time()})
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return None, f"{device}: {why}"
    _write_holder(fd, {"pid": os.getpid(), "label": label, "host": device.host, "device": device.id, "t": time.time()})
    return DeviceLease(device, path, label, fd, time.time(), 0.0, previous), ""


def _write_holder(fd: int, record: Mapping[str, Any]) -> None:
    # In place, never by rename: the lock belongs to this inode.
    data = json.dumps(dict(record)).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def acquire_device(
    devices: Sequence[Device],
    root: str | os.PathLike[str],
    *,
    label: str = "",
    probe: Probe | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 1.0,
) -> DeviceLease:
    """Lease the first free device of ``devices``, waiting up to ``timeout_s``.

    Free = its lock file is not locked and ``probe`` (when given) says it is idle. DeviceBusyError after the
    timeout names every device and why it was not free; LeaseError names a lock file that cannot be used.
    """
    if not devices:
        raise FleetError("no device to lease: this host has no devices in the fleet")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    label = label or f"pid {os.getpid()}"
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while True:
        reasons = []
        for device in devices:
            lease, why = _try_lock(device, root, label, probe)
            if lease is not None:
                lease.waited_s = time.monotonic() - t0
                _log_event(root, "acquire", device, label)
                log.info("fleet: %s leased %s after %.1f s (%s)", label, device, lease.waited_s, lease.path)
                return lease
            reasons.append(why)
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeviceBusyError(
                f"no free device after {timeout_s:g} s (VALIDATION.ASCEND.LEASE_TIMEOUT_S) for {label}: "
                + "; ".join(reasons)
            )
        time.sleep(min(poll_s, left))


@contextlib.contextmanager
def lease_for(target: Any, label: str) -> Iterator[DeviceLease | None]:
    """A lease on one of this host's devices of ``target``'s fleet (idleness from ``target.device_state``), or
    None for a target without a fleet (CPU benchmarks are serialised by their pool alone)."""
    fleet = target.fleet()
    if fleet is None:
        yield None
        return
    a = target.cfg.VALIDATION.ASCEND
    with acquire_device(
        fleet.local_devices(),
        lease_dir(target.cfg),
        label=label,
        probe=target.device_state,
        timeout_s=float(a.LEASE_TIMEOUT_S),
        poll_s=max(float(a.BUSY_POLL_S), 0.05),
    ) as lease:
        yield lease


def read_lease_log(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lease log's events, oldest first."""
    path = Path(root) / LEASE_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def lease_intervals(events: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[float, float, str]]]:
    """Per device (``host:id``), the (acquired, released, label) intervals of the log; an acquire without a
    release (a killed holder) ends at the next acquire of that device."""
    open_: dict[tuple[str, int], tuple[float, str]] = {}
    out: dict[str, list[tuple[float, float, str]]] = {}
    for e in sorted(events, key=lambda e: e["t"]):
        key = (e["host"], int(e["device"]))
        name = str(Device(*key))
        if e["event"] == "acquire":
            if key in open_:
                t, lab = open_.pop(key)
                out.setdefault(name, []).append((t, e["t"], lab + " (no release: holder died)"))
            open_[key] = (e["t"], e["label"])
        elif e["event"] == "release" and key in open_:
            t, lab = open_.pop(key)
            out.setdefault(name, []).append((t, e["t"], lab))
    for key, (t, lab) in open_.items():
        out.setdefault(str(Device(*key)), []).append((t, float("inf"), lab))
    return out


__all__ = [
    "ANY_HOST",
    "Device",
    "DeviceLease",
    "Fleet",
    "FleetError",
    "LeaseError",
    "acquire_device",
    "device_pool",
    "lease_dir",
    "lease_for",
    "lease_intervals",
    "lease_path",
    "local_host",
    "read_lease_log",
]
