"""How many CPU threads torch uses (bottom layer; torch is imported only when applied).

torch's default is one intra-op thread per core. That is right on an idle machine and very
wrong on a busy one: OpenMP threads that wait for a peer descheduled by another process make
every operation as slow as its slowest core (``benchmarks/threads_under_load.py`` on 2 cores with
one busy process beside it: ``train`` at 15,429 tokens/s with 2 threads, 35,921 with one and
40,910 with this rule; idle, 46,506 / 40,700 / 51,110). So the automatic choice
(``threads`` 0) takes the cores this process may use (its affinity mask, capped by a cgroup CPU
quota such as ``docker run --cpus``) less those other processes keep busy, measured over a short
window from ``/proc/stat`` (the load average elsewhere), and never fewer than one. An explicit
``OMP_NUM_THREADS`` or ``--threads N`` is the user's choice and is kept. Only CPU runs are
changed: on a GPU the host threads only launch kernels. Results do not depend on the count
(tested), so a resume or a shard may run with another one.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

WINDOW_S = 0.1  # 10 ticks of a 100 Hz clock per CPU: enough to tell busy from idle


def available_cpus() -> int:
    """The cores this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def cgroup_cpu_quota() -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` (None: no quota)."""
    try:
        v2 = Path("/sys/fs/cgroup/cpu.max")
        if v2.is_file():
            return parse_quota(*v2.read_text().split()[:2])
        v1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        if v1.is_file():
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text()
            return parse_quota(v1.read_text(), period)
    except (OSError, ValueError, TypeError):
        pass
    return None


def parse_quota(quota: str, period: str) -> float | None:
    quota = quota.strip()
    if quota in ("max", "-1"):
        return None
    return int(quota) / int(period)


def cpu_times(stat_text: str, cpus: set[int]) -> dict[int, tuple[int, int]]:
    """``{cpu: (busy, total)}`` jiffies of the listed CPUs from ``/proc/stat``."""
    out = {}
    for line in stat_text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in fields[:8]]  # user..steal; guest time is inside user
        idle = ticks[3] + ticks[4]  # idle + iowait
        out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return out


def busy_cores(before: dict, after: dict) -> float:
    """How many of the CPUs were busy between two :func:`cpu_times` readings."""
    busy = 0.0
    for cpu, (b1, t1) in after.items():
        b0, t0 = before.get(cpu, (b1, t1))
        if t1 > t0:
            busy += (b1 - b0) / (t1 - t0)
    return busy


def other_load() -> float:
    """Cores other processes keep busy now: measured over :data:`WINDOW_S` on Linux (while this
    process sleeps), else the 1-minute load average (0 where there is none)."""
    try:
        cpus = set(os.sched_getaffinity(0))
        stat = Path("/proc/stat")
        before = cpu_times(stat.read_text(), cpus)
        time.sleep(WINDOW_S)
        return busy_cores(before, cpu_times(stat.read_text(), cpus))
    except (AttributeError, OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def auto_threads(cpus: int, load: float, processes: int = 1) -> int:
    """Threads for each of ``processes`` processes sharing ``cpus`` cores with ``load`` cores
    of other work: the idle cores, shared out, at least one."""
    idle = cpus - math.floor(load + 0.5)
    return max(1, min(cpus, idle) // max(1, processes))


def use_cpu_threads(requested: int = 0) -> int:
    """Set torch's (and, if not yet started, numba's) intra-op threads; returns the number.
    ``requested`` 0 chooses automatically unless ``OMP_NUM_THREADS`` is set."""
    import torch

    if requested == 0 and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # torchrun's on this node
    threads = requested or auto_threads(available_cpus(), other_load(), processes)
    torch.set_num_threads(threads)
    # numba reads this when its thread pool starts (the co-occurrence kernels); later it is fixed.
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    return threads
