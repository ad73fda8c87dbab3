"""Slurm: what an `srun` task learns from SLURM_* variables (ranks, node list, rank 0's host, port).

Why a module of its own: Slurm's compact formats (`node[01-03,7]`, `2(x3),1`) need a parser,
and `--launcher slurm` turns them into the torchrun-style environment `dist.group` joins with.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from rotld_cli.errors import UsageError


@dataclass(frozen=True)
class SlurmEnv:
    """The Slurm step's view of this task (srun exports these variables to every task)."""

    proc_id: int
    ntasks: int
    local_id: int
    node_id: int
    nnodes: int
    nodelist: str
    job_id: str | None
    tasks_per_node: tuple[int, ...]


def read_slurm_env(environ: Mapping[str, str] | None = None) -> SlurmEnv:
    """Slurm's task variables; a missing one means we are not an srun task (one line naming it)."""
    environ = os.environ if environ is None else environ

    def first(*names: str) -> tuple[str, str | None]:
        for name in names:
            if environ.get(name):
                return name, environ[name]
        return names[0], None

    values: dict[str, int] = {}
    for key, names in (("proc_id", ("SLURM_PROCID",)), ("ntasks", ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")),
                       ("local_id", ("SLURM_LOCALID",)), ("node_id", ("SLURM_NODEID",)),
                       ("nnodes", ("SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES"))):
        name, raw = first(*names)
        if raw is None:
            raise UsageError(f"--launcher slurm: {name} is not set; start one task per GPU with `srun ... rotld ...`")
        try:
            values[key] = int(raw)
        except ValueError:
            raise UsageError(f"--launcher slurm: {name}={raw!r} is not an integer") from None
    name, nodelist = first("SLURM_STEP_NODELIST", "SLURM_NODELIST", "SLURM_JOB_NODELIST")
    if nodelist is None:
        raise UsageError(f"--launcher slurm: {name} is not set; start the tasks with `srun ... rotld ...`")
    _, tasks_text = first("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
    tasks = parse_tasks_per_node(tasks_text) if tasks_text else ()
    if not 0 <= values["proc_id"] < values["ntasks"]:
        raise UsageError(f"--launcher slurm: SLURM_PROCID={values['proc_id']} is not below "
                         f"SLURM_NTASKS={values['ntasks']}")
    return SlurmEnv(job_id=environ.get("SLURM_JOB_ID"), nodelist=nodelist, tasks_per_node=tasks, **values)


_TASKS_ITEM = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")


def parse_tasks_per_node(text: str) -> tuple[int, ...]:
    """Slurm's compressed per-node counts: '4(x2),3' -> (4, 4, 3)."""
    counts: list[int] = []
    for item in text.split(","):
        match = _TASKS_ITEM.match(item.strip())
        if not match:
            raise UsageError(f"--launcher slurm: cannot read the tasks per node {text!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return tuple(counts)


def _split_top_level(text: str) -> list[str]:
    """Split a hostlist at the commas outside brackets: 'a[1,2],b' -> ['a[1,2]', 'b']."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in (part.strip() for part in parts) if p]


def first_host_of(nodelist: str) -> str:
    """The first host of a Slurm hostlist without `scontrol`: 'gpu[07-09,12],cpu1' -> 'gpu07'.

    Each bracket group contributes its first value (zero padding kept), which is the first host
    Slurm's own expansion yields.
    """
    hosts = _split_top_level(nodelist)
    if not hosts:
        raise UsageError(f"--launcher slurm: empty node list {nodelist!r}")

    def first_value(match: re.Match) -> str:
        return match.group(1).split(",")[0].split("-")[0]

    host = re.sub(r"\[([^\]]*)\]", first_value, hosts[0])
    if not host or "[" in host or "]" in host:
        raise UsageError(f"--launcher slurm: cannot read the node list {nodelist!r}")
    return host


def master_host(nodelist: str, scontrol: str | None = None) -> str:
    """The host of rank 0: `scontrol show hostnames NODELIST`'s first line when scontrol runs, else our parser."""
    scontrol = shutil.which("scontrol") if scontrol is None else scontrol
    if scontrol:
        try:
            out = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()
        except (OSError, subprocess.SubprocessError):
            out = []
        if out:
            return out[0]
    return first_host_of(nodelist)


def slurm_port(job_id: str | None, default: int = 29500) -> int:
    """A port every task of the job derives alike: 20000 + job id mod 20000 (jobs sharing a node differ)."""
    if job_id and job_id.isdigit():
        return 20000 + int(job_id) % 20000
    return default


def slurm_worker_env(slurm: SlurmEnv, master_addr: str, master_port: int, gpu_count: int) -> dict[str, str]:
    """The torchrun-style variables for one Slurm task (LOCAL_RANK = the GPU it drives, as mmcv does)."""
    local = slurm.local_id % gpu_count if gpu_count > 0 else slurm.local_id
    per_node = slurm.tasks_per_node[slurm.node_id] if slurm.node_id < len(slurm.tasks_per_node) else None
    env = {
        "RANK": str(slurm.proc_id),
        "WORLD_SIZE": str(slurm.ntasks),
        "LOCAL_RANK": str(local),
        "NODE_RANK": str(slurm.node_id),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
    }
    if per_node is not None:
        env["LOCAL_WORLD_SIZE"] = str(per_node)
    return env
