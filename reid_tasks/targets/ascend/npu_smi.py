"""``npu-smi info``: which devices a host has and whether one is idle (the seed needs a device to itself).

The table has two rows per chip (``NPU Name | Health | Power Temp`` then ``Chip Device | Bus-Id | AICore(%)
Memory-Usage``) and, on newer drivers, a process table with ``No running processes found in NPU <npu>`` lines.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from reid_tasks.errors import BenchmarkError, DeviceBusyError, TargetUnavailable
from reid_tasks.utils import tail

from .cann import Cann

log = logging.getLogger("reid_tasks.targets.ascend")


@dataclass(frozen=True)
class NpuChip:
    npu_id: int
    name: str  # as npu-smi prints it: "310", "310P3", "910B3"
    health: str
    chip_id: int
    device_id: int  # logical device id (what -device_id / --device take)
    bus_id: str
    aicore_percent: float
    memory_used_mb: int | None
    memory_total_mb: int | None

    @property
    def kind(self) -> str:
        """``Ascend310`` style name (the SoC naming ATC and the reference figures use)."""
        return self.name if self.name.lower().startswith("ascend") else f"Ascend{self.name}"


@dataclass(frozen=True)
class NpuProcess:
    npu_id: int
    chip_id: int
    pid: int
    name: str
    memory_mb: float | None


@dataclass(frozen=True)
class NpuSmiInfo:
    version: str | None
    chips: list[NpuChip]
    processes: list[NpuProcess] = field(default_factory=list)
    idle_npus: set[int] = field(default_factory=set)  # "No running processes found in NPU <id>"
    has_process_table: bool = False
    double: bool = False

    def chip(self, device_id: int) -> NpuChip | None:
        return next((c for c in self.chips if c.device_id == device_id), None)

    def device_state(self, device_id: int) -> tuple[bool, str]:
        """(idle, why): idle = listed, AICore 0 % and no process on its chip."""
        chip = self.chip(device_id)
        if chip is None:
            listed = sorted(c.device_id for c in self.chips)
            return False, f"device {device_id} is not listed by npu-smi (devices: {listed})"
        procs = [p for p in self.processes if p.npu_id == chip.npu_id and p.chip_id == chip.chip_id]
        reasons = []
        if chip.aicore_percent != 0:
            reasons.append(f"AICore {chip.aicore_percent:g} %")
        if procs:
            reasons.append("processes " + ", ".join(f"{p.pid} {p.name}".strip() for p in procs))
        if reasons:
            return False, f"device {device_id} (NPU {chip.npu_id} chip {chip.chip_id}) busy: " + "; ".join(reasons)
        return True, f"device {device_id} (NPU {chip.npu_id} chip {chip.chip_id}, {chip.kind}) idle"


_HEADER_VERSION_RE = re.compile(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)")
_NO_PROC_RE = re.compile(r"No running processes found in NPU\s+(\d+)")
_MEM_RE = re.compile(r"(\d+)\s*/\s*(\d+)")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_npu_smi(text: str) -> NpuSmiInfo:
    """Parse ``npu-smi info`` (Ascend 310 two-row chip layout; 310P/910 layouts without a Device column too)."""
    m = _HEADER_VERSION_RE.search(text)
    version = m.group(2) if m else None
    chips: list[NpuChip] = []
    processes: list[NpuProcess] = []
    idle: set[int] = set()
    section = "head"
    pending: list[str] | None = None
    has_proc = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("|"):
            continue
        if "Process id" in line:
            section, has_proc, pending = "proc", True, None
            continue
        if "Name" in line and "Health" in line:
            section = "chips"
            continue
        if "Bus-Id" in line and "AICore" in line:
            continue
        if section == "proc":
            nm = _NO_PROC_RE.search(line)
            if nm:
                idle.add(int(nm.group(1)))
                continue
            cells = _cells(line)
            first = cells[0].split()
            if len(first) == 2 and all(t.isdigit() for t in first) and len(cells) >= 2 and cells[1].isdigit():
                mem = cells[3] if len(cells) > 3 else ""
                processes.append(
                    NpuProcess(
                        npu_id=int(first[0]),
                        chip_id=int(first[1]),
                        pid=int(cells[1]),
                        name=cells[2] if len(cells) > 2 else "",
                        memory_mb=float(mem) if _is_number(mem) else None,
                    )
                )
            continue
        if section != "chips":
            continue
        cells = _cells(line)
        if len(cells) < 3:
            continue
        if pending is None:
            first = cells[0].split()
            if len(first) >= 2 and first[0].isdigit():
                pending = cells
            continue
        chips.append(_chip(pending, cells, raw))
        pending = None
    return NpuSmiInfo(
        version=version,
        chips=chips,
        processes=processes,
        idle_npus=idle,
        has_process_table=has_proc,
        double="TEST DOUBLE" in text,
    )


def _chip(row1: list[str], row2: list[str], raw: str) -> NpuChip:
    npu_s, name = row1[0].split()[:2]
    ids = row2[0].split()
    third = row2[2].split()
    if not ids or not ids[0].isdigit() or not third or not _is_number(third[0]):
        raise BenchmarkError(f"npu-smi: cannot parse chip row {raw.strip()!r}")
    chip_id = int(ids[0])
    device_id = int(ids[1]) if len(ids) > 1 and ids[1].isdigit() else int(npu_s)
    mems = _MEM_RE.findall(row2[2])
    used, total = (int(mems[-1][0]), int(mems[-1][1])) if mems else (None, None)
    return NpuChip(
        npu_id=int(npu_s),
        name=name,
        health=row1[1].split()[0] if row1[1] else "",
        chip_id=chip_id,
        device_id=device_id,
        bus_id=row2[1],
        aicore_percent=float(third[0]),
        memory_used_mb=used,
        memory_total_mb=total,
    )


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class NpuSmi:
    """``npu-smi info`` of this host, through the CANN environment."""

    TIMEOUT_S = 60.0

    def __init__(self, cann: Cann) -> None:
        self.cann = cann

    def text(self) -> str:
        smi = self.cann.which("npu-smi")
        if not smi:
            raise TargetUnavailable("npu-smi not on PATH (Ascend driver not installed?)")
        try:
            proc = subprocess.run(
                [smi, "info"],
                env=self.cann.environment(),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self.TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchmarkError(f"npu-smi info timed out after {self.TIMEOUT_S:g} s") from exc
        if proc.returncode != 0:
            raise BenchmarkError(f"npu-smi info failed (exit {proc.returncode}):\n{tail(proc.stdout + proc.stderr)}")
        return proc.stdout

    def missing(self, device_ids: Sequence[int]) -> list[str]:
        """What keeps ``device_ids`` from being used here: no npu-smi, or npu-smi does not list one of them."""
        if not self.cann.which("npu-smi"):
            return ["npu-smi not on PATH (Ascend driver not installed?)"]
        try:
            info = parse_npu_smi(self.text())
        except (BenchmarkError, TargetUnavailable) as exc:
            return [str(exc)]
        listed = sorted(c.device_id for c in info.chips)
        return [f"npu-smi info lists no device {d} (devices: {listed})" for d in device_ids if info.chip(d) is None]

    def device_state(self, device_id: int) -> tuple[bool, str]:
        """(idle, why) from one ``npu-smi info``."""
        try:
            return parse_npu_smi(self.text()).device_state(device_id)
        except (BenchmarkError, TargetUnavailable) as exc:
            return False, f"device {device_id}: {exc}"

    def wait_idle(self, device_id: int, *, timeout_s: float, poll_s: float) -> NpuSmiInfo:
        """Poll until the device is idle; DeviceBusyError with npu-smi's output after ``timeout_s``."""
        poll_s = max(poll_s, 0.01)
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            info = parse_npu_smi(text)
            idle, why = info.device_state(device_id)
            if idle:
                return info
            if info.chip(device_id) is None:
                raise TargetUnavailable(f"ascend310: {why}. npu-smi info said:\n{text}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceBusyError(
                    f"ascend310: {why}; still not idle after {timeout_s:g} s (polled every {poll_s:g} s; "
                    "VALIDATION.ASCEND.BUSY_TIMEOUT_S). The seed needs the device to itself. "
                    f"npu-smi info said:\n{text}"
                )
            log.info("ascend310: %s; waiting (%.0f s left)", why, left)
            time.sleep(min(poll_s, left))
