"""Starting a run on several processes: check the request, then run torchrun or join a Slurm step.

Why here and not in each command: `train-teacher` and `distill` take the same launch options and
must refuse the same bad requests (more GPUs than visible, a busy master port, world sizes that
disagree with Slurm's) in one line before anything is built. The command calls
`maybe_launch(ARGV, ...)` first, ARGV being the arguments it was itself given (`rotld_cli.cli.main`'s):

- `--launcher auto` (default): one process unless `--gpus N` (N > 1), `--gpus 0 --nproc N` or
  `--nnodes` ask for more; then rotld runs torchrun (`torch.distributed.run`) in a child process,
  whose workers (`python -m rotld_cli.cli.worker ARGV...`) each re-run the same command line.
- `--launcher torchrun`: this process was started by the user's torchrun (RANK etc. are set).
- `--launcher slurm`: this process is one `srun` task; SLURM_* give the ranks and rank 0's host.

Why torchrun runs in a child process: a worker that dies (killed, out of memory, a crash) makes
the torchrun agent stop the others and fail; this process then reads what happened (the agent's
failure summary and each worker's error record) and ends the run with one line and a non-zero
exit code instead of torchrun's multi-screen report.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotld_cli.engine.dist import group, slurm
from rotld_cli.errors import RotldError, UsageError

LAUNCHERS = ("auto", "torchrun", "slurm")
WORKER_MODULE = "rotld_cli.cli.worker"  # the CLI layer: the engine never imports the CLI
FAILURE_DIR_ENV = "ROTLD_FAILURE_DIR"
AGENT_RECORD = "agent.json"
DEFAULT_MULTINODE_PORT = 29500
INTERRUPT_GRACE_S = 30.0
# The agent passes these on to the workers, which save a checkpoint and stop (engine/preemption.py); it
# waits this long for them before SIGKILL (torch's default, 30 s, is short for a save after a long step).
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
WORKER_STOP_TIMEOUT_S = "120"
RESUME_HINT = "checkpoints already written are intact: rerun the same command with --resume to continue"


class WorkerFailed(RotldError):
    """A distributed run ended because one of its processes failed; the exit code is that process's."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class LaunchPlan:
    """What torchrun starts on this node."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    device: str = "cuda"

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


# --------------------------------------------------------------------------------------------
# Checking the request


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def worker_device(gpus: int | None, device: str | None) -> str | None:
    """`--gpus 0` means CPU processes; otherwise `--device` (None: the caller's default)."""
    if gpus == 0:
        if device == "cuda":
            raise UsageError("--device cuda with --gpus 0: --gpus 0 runs on the CPU; drop one of them")
        return "cpu"
    return device


def _check_common(gpus: int | None, nproc: int | None, nnodes: int | None, node_rank: int | None,
                  master_port: int | None, launcher: str) -> None:
    if launcher not in LAUNCHERS:
        raise UsageError(f"--launcher {launcher}: expected one of {', '.join(LAUNCHERS)}")
    if gpus is not None and gpus < 0:
        raise UsageError(f"--gpus {gpus}: must be >= 0 (0 runs CPU processes, see --nproc)")
    if nproc is not None and nproc < 1:
        raise UsageError(f"--nproc {nproc}: must be >= 1")
    if nproc is not None and gpus not in (None, 0) and nproc != gpus:
        raise UsageError(f"--nproc {nproc} with --gpus {gpus}: each process drives one GPU; "
                         "drop --nproc (it counts CPU processes, with --gpus 0)")
    if nproc is not None and gpus is None:
        raise UsageError(f"--nproc {nproc}: counts CPU processes; add --gpus 0 (or use --gpus N for GPUs)")
    if nnodes is not None and nnodes < 1:
        raise UsageError(f"--nnodes {nnodes}: must be >= 1")
    if node_rank is not None and not 0 <= node_rank < (nnodes or 1):
        raise UsageError(f"--node-rank {node_rank}: must be in 0..{(nnodes or 1) - 1} (--nnodes {nnodes or 1})")
    if master_port is not None and not 1 <= master_port <= 65535:
        raise UsageError(f"--master-port {master_port}: must be in 1..65535")


def check_port_free(port: int, option: str = "--master-port") -> None:
    """Refuse a master port that something on this machine already listens on (as the store would bind it)."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise UsageError(f"{option} {port}: already in use on this machine (another run?); "
                                     "choose a free port") from None
                if family == socket.AF_INET6 and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    continue
                raise UsageError(f"{option} {port}: cannot bind it ({exc.strerror or exc})") from None


def free_port() -> int:
    """A TCP port that is free right now (for tests and single-node runs that name none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plan_launch(gpus: int | None = None, nproc: int | None = None, nnodes: int | None = None,
                node_rank: int | None = None, master_addr: str | None = None, master_port: int | None = None,
                device: str | None = None, gpu_count: Callable[[], int] = visible_gpus) -> LaunchPlan | None:
    """The torchrun launch that `--launcher auto` asks for, or None for a single process.

    Every check runs before any work: option ranges, GPUs visible on this node, the master
    address of a multi-node run, and a busy master port on the node that hosts it.
    """
    _check_common(gpus, nproc, nnodes, node_rank, master_port, "auto")
    worker_device(gpus, device)
    cpu = gpus == 0
    per_node = (nproc or 1) if cpu else (1 if gpus is None else gpus)
    nodes = nnodes or 1
    if per_node * nodes == 1:
        return None
    if not cpu:
        # name what the user passed: `--nnodes 2` alone runs one GPU process per machine
        asked = f"--gpus {gpus}" if gpus is not None else f"--nnodes {nodes} (one GPU process per machine)"
        if device == "cpu":
            raise UsageError(f"--device cpu with {asked}: for CPU processes use --gpus 0 --nproc N")
        visible = gpu_count()
        if visible < per_node:
            shown = os.environ.get("CUDA_VISIBLE_DEVICES")
            where = f" (CUDA_VISIBLE_DEVICES={shown})" if shown is not None else ""
            fix = "lower --gpus" if gpus is not None else "run on GPU machines"
            raise UsageError(f"{asked}: only {visible} GPU{'s' if visible != 1 else ''} visible on this "
                             f"machine{where}; {fix}, or use --gpus 0 --nproc N for CPU processes")
    rank = node_rank or 0
    if nodes > 1:
        if not master_addr:
            raise UsageError(f"--master-addr: required with --nnodes {nodes} (the address of the node started "
                             "with --node-rank 0, reachable from every node)")
        port = master_port or DEFAULT_MULTINODE_PORT
    else:
        port = master_port
    if port is not None and rank == 0:
        check_port_free(port)
    addr = master_addr or ("127.0.0.1" if port is not None else None)
    return LaunchPlan(nproc_per_node=per_node, nnodes=nodes, node_rank=rank, master_addr=addr, master_port=port,
                      device="cpu" if cpu else "cuda")


# --------------------------------------------------------------------------------------------
# Running torchrun


def torchrun_args(plan: LaunchPlan) -> list[str]:
    """`torch.distributed.run` options for the plan (static rendezvous; torchrun picks a port when none is named)."""
    args = ["--nnodes", str(plan.nnodes), "--nproc-per-node", str(plan.nproc_per_node), "--max-restarts", "0"]
    if plan.nnodes > 1:
        args += ["--node-rank", str(plan.node_rank)]
    if plan.master_port is not None:
        args += ["--master-addr", str(plan.master_addr), "--master-port", str(plan.master_port)]
    return args


def agent_command(plan: LaunchPlan, worker_argv: Sequence[str], entry: Sequence[str] | None = None) -> list[str]:
    """The child process: our torchrun agent running `entry` (default: the rotld worker with `worker_argv`).

    torchrun's options come before a `--`; the worker's command line after it is never parsed by
    torchrun (its argparse would take `--nproc` for an abbreviation of `--nproc-per-node`).
    """
    entry = list(entry) if entry is not None else ["--module", WORKER_MODULE]
    return [sys.executable, "-m", "rotld_cli.engine.dist.launch", *torchrun_args(plan), "--", *entry, *worker_argv]


def _split_agent_argv(argv: Sequence[str]) -> tuple[list[str], bool, str, list[str]]:
    """(torchrun options, run as module, script or module, its arguments) from the agent's command line."""
    argv = list(argv)
    if "--" not in argv:
        raise UsageError("rotld_cli.engine.dist.launch: expected TORCHRUN_OPTIONS -- [--module] ENTRY [ARGS...]")
    cut = argv.index("--")
    options, rest = argv[:cut], argv[cut + 1:]
    module = bool(rest) and rest[0] == "--module"
    rest = rest[1:] if module else rest
    if not rest:
        raise UsageError("rotld_cli.engine.dist.launch: no script or module after `--`")
    return options, module, rest[0], rest[1:]


def agent_env(plan: LaunchPlan, record_dir: Path, base: Mapping[str, str] | None = None,
              debug: bool = False) -> dict[str, str]:
    """The agent's (and so the workers') environment: worker marker, device, failure records, quiet agent."""
    env = dict(os.environ if base is None else base)
    env[group.WORKER_ENV] = "1"
    env[group.DEVICE_ENV] = plan.device
    env[FAILURE_DIR_ENV] = str(record_dir)
    env.setdefault("PET_SIGNALS_TO_HANDLE", FORWARDED_SIGNALS)  # torchrun's --signals-to-handle (ignored by old ones)
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", WORKER_STOP_TIMEOUT_S)
    if not debug:
        env["LOGLEVEL"] = "CRITICAL"  # torch elastic's loggers: we report failures ourselves
    if "OMP_NUM_THREADS" not in env:
        threads = max(1, (os.cpu_count() or 1) // plan.nproc_per_node) if plan.device == "cpu" else 1
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_launch(plan: LaunchPlan, worker_argv: Sequence[str], entry: Sequence[str] | None = None,
               debug: bool = False) -> int:
    """Run the torchrun agent and wait: 0 when every worker succeeded.

    A failure raises WorkerFailed with one line naming the rank that caused it, or returns the
    exit code when that rank (rank 0) already printed its own error line.
    """
    record_dir = Path(tempfile.mkdtemp(prefix="rotld-launch-"))
    try:
        env = agent_env(plan, record_dir, debug=debug)
        process = subprocess.Popen(agent_command(plan, worker_argv, entry), env=env)
        interrupted = False
        with _forwarding_stop_signals(process):
            try:
                code = process.wait()
            except KeyboardInterrupt:
                interrupted = True
                code = _wait_after_interrupt(process)
        if code == 0 and not interrupted:
            return 0
        return report_failure(record_dir, code, interrupted)
    finally:
        shutil.rmtree(record_dir, ignore_errors=True)


@contextlib.contextmanager
def _forwarding_stop_signals(process: subprocess.Popen) -> Iterator[None]:
    """SIGTERM / SIGUSR1 sent to this process (`kill`, a scheduler) go to the agent, which hands them to the
    workers: they save a checkpoint and stop, and this process reports how they ended."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def forward(signum: int, frame: Any) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGUSR1):
        previous[signum] = signal.signal(signum, forward)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait_after_interrupt(process: subprocess.Popen) -> int:
    """Ctrl-C reached the workers too: give them time to stop cleanly, then terminate the agent."""
    deadline = time.monotonic() + INTERRUPT_GRACE_S
    while time.monotonic() < deadline:
        try:
            return process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:
            break
    process.terminate()
    try:
        return process.wait(timeout=INTERRUPT_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


# --------------------------------------------------------------------------------------------
# Failure reports


def failure_dir() -> Path | None:
    raw = os.environ.get(FAILURE_DIR_ENV)
    return Path(raw) if raw else None


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    """One small JSON record (temp + rename: the reader never sees half a file)."""
    from rotld_cli.fileio import atomic_write_text

    try:
        atomic_write_text(path, json.dumps(dict(record)))
    except OSError:
        pass  # the report falls back to the exit code


def _read_records(record_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    agent: dict[str, Any] = {}
    workers: list[dict[str, Any]] = []
    for path in sorted(record_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if path.name == AGENT_RECORD:
            agent = data
        elif isinstance(data, dict) and "rank" in data:
            workers.append(data)
    return agent, workers


def _signal_name(exitcode: int) -> str:
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def report_failure(record_dir: Path, code: int, interrupted: bool = False) -> int:
    """Turn the agent's and workers' records into one line (raised) or the code of an already printed error.

    The root cause is, in this order: a worker killed by a signal other than SIGTERM (which is how
    the agent stops the others), a worker that reported a rotld error, a worker that failed on
    its own, a worker that only lost its peers, a worker that the agent stopped.
    """
    agent, workers = _read_records(record_dir)
    if interrupted or agent.get("signal") in ("SIGINT", "SIGTERM", "SIGUSR1"):
        printed = [r for r in workers if r.get("printed")]
        if printed:
            return int(printed[0].get("exit_code") or 130)  # rank 0 printed where it stopped (and saved)
        raise WorkerFailed(f"interrupted; {RESUME_HINT}", 130)
    failures = sorted(agent.get("failures", []), key=lambda f: f.get("rank", 0))
    killed = [f for f in failures if int(f.get("exitcode", 0)) < 0 and -int(f["exitcode"]) != signal.SIGTERM]
    if killed:
        first = killed[0]
        raise WorkerFailed(
            f"distributed run failed: rank {first['rank']} (pid {first.get('pid', '?')}) was killed by "
            f"{_signal_name(int(first['exitcode']))}; the other workers were stopped; {RESUME_HINT}"
        )
    if workers:
        cause = min(workers, key=lambda r: (not r.get("rotld_error", False), bool(r.get("peer_lost", False)),
                                            r.get("time", 0.0), r["rank"]))
        exit_code = int(cause.get("exit_code", 1)) or 1
        shown = {r.get("message") for r in workers if r.get("printed")}
        if cause.get("printed") or cause.get("message") in shown:
            return exit_code  # rank 0 already printed this line (every rank refuses the same bad input)
        message = str(cause.get("message") or f"exited with code {exit_code}")
        raise WorkerFailed(f"rank {cause['rank']}: {message}", exit_code)
    if agent.get("error"):
        raise WorkerFailed(f"distributed run failed: torchrun: {agent['error']}")
    if failures:
        first = failures[0]
        exitcode = int(first.get("exitcode", 1))
        how = f"was stopped by {_signal_name(exitcode)}" if exitcode < 0 else f"exited with code {exitcode}"
        raise WorkerFailed(f"distributed run failed: rank {first['rank']} {how}; {RESUME_HINT}")
    raise WorkerFailed(f"distributed run failed: the torchrun launcher exited with code {code}")


def agent_main(argv: Sequence[str]) -> int:
    """The child process: torch's own `torchrun` (`torch.distributed.run.run`), with its failure written as JSON."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if os.environ.get("LOGLEVEL") == "CRITICAL":
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    record_dir = failure_dir()
    options, module, script, script_args = _split_agent_argv(argv)
    args = parse_args([*options, *(["--module"] if module else []), script])
    args.training_script_args = script_args
    try:
        run(args)
    except ChildFailedError as exc:
        failures = [{"rank": int(rank), "local_rank": f.local_rank, "pid": f.pid, "exitcode": f.exitcode}
                    for rank, f in sorted(exc.failures.items())]
        world = int(args.nproc_per_node) * int(str(args.nnodes).split(":")[-1])
        if record_dir is not None:
            write_record(record_dir / AGENT_RECORD, {"failures": failures, "world_size": world})
        return 1
    except SignalException as exc:
        if record_dir is not None:
            write_record(record_dir / AGENT_RECORD, {"signal": exc.sigval.name})
        return 128 + int(exc.sigval)
    except Exception as exc:  # rendezvous timeouts, unreachable master, ...: reported as one line
        if record_dir is not None:
            detail = str(exc).splitlines()[0] if str(exc) else ""
            write_record(record_dir / AGENT_RECORD, {"error": f"{type(exc).__name__}: {detail}".rstrip(": ")})
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# Joining a run started elsewhere (srun tasks, the user's torchrun)


def _join(device: str, environ_update: Mapping[str, str] | None = None,
          on_join: Callable[[int], None] | None = None) -> None:
    if environ_update:
        os.environ.update(environ_update)
    ctx = group.init_from_env(device)
    group.silence_other_ranks(ctx.rank)
    if on_join is not None:
        on_join(ctx.rank)
    atexit.register(group.destroy)


def _default_device(gpus: int | None, device: str | None) -> str:
    chosen = worker_device(gpus, device)
    if chosen is not None:
        return chosen
    return "cuda" if visible_gpus() > 0 else "cpu"


def join_slurm(gpus: int | None = None, nproc: int | None = None, nnodes: int | None = None,
               node_rank: int | None = None, master_addr: str | None = None, master_port: int | None = None,
               device: str | None = None, environ: Mapping[str, str] | None = None,
               on_join: Callable[[int], None] | None = None) -> None:
    """This process is one srun task: check the allocation against the options, then join the group.

    World size = SLURM_NTASKS (one task per GPU, or per CPU process with --gpus 0); rank =
    SLURM_PROCID; the GPU = SLURM_LOCALID modulo the GPUs this task sees; rank 0's host = the
    first host of the step's node list (`scontrol show hostnames`, else our parser); the port =
    --master-port, else MASTER_PORT, else 20000 + SLURM_JOB_ID mod 20000 (the same in every task).
    """
    _check_common(gpus, nproc, nnodes, None, master_port, "slurm")
    if node_rank is not None:
        raise UsageError("--node-rank: not used with --launcher slurm (Slurm numbers the nodes)")
    allocation = slurm.read_slurm_env(environ)
    if nnodes is not None and nnodes != allocation.nnodes:
        raise UsageError(
            f"--nnodes {nnodes} does not match the Slurm step's {allocation.nnodes} node(s) (SLURM_NNODES)"
        )
    per_node = nproc if gpus == 0 else gpus
    if per_node is not None and per_node * allocation.nnodes != allocation.ntasks:
        option = f"--nproc {nproc}" if gpus == 0 else f"--gpus {gpus}"
        raise UsageError(
            f"{option} × {allocation.nnodes} node(s) = {per_node * allocation.nnodes} processes, but Slurm started "
            f"SLURM_NTASKS={allocation.ntasks} tasks; ask srun for --ntasks-per-node={per_node} or drop {option}"
        )
    chosen = _default_device(gpus, device)
    gpu_count = visible_gpus() if chosen == "cuda" else 0
    if chosen == "cuda" and gpu_count == 0:
        raise UsageError("--launcher slurm: no GPU visible to this task; request GPUs from Slurm (--gpus-per-task=1) "
                         "or run CPU processes with --gpus 0")
    env = os.environ if environ is None else environ
    port = master_port or int(env.get("MASTER_PORT") or slurm.slurm_port(allocation.job_id))
    addr = master_addr or slurm.master_host(allocation.nodelist)
    if allocation.proc_id == 0:
        check_port_free(port)
    _join(chosen, slurm.slurm_worker_env(allocation, addr, port, gpu_count), on_join)


def join_torchrun(gpus: int | None = None, nproc: int | None = None, nnodes: int | None = None,
                  device: str | None = None, on_join: Callable[[int], None] | None = None) -> None:
    """This process was started by the user's torchrun: check WORLD_SIZE against the options, then join."""
    _, world, _ = group.env_ranks()
    nodes = nnodes or 1
    per_node = nproc if gpus == 0 else gpus
    if per_node is not None and per_node * nodes != world:
        raise UsageError(f"--launcher torchrun: {per_node} process(es) × {nodes} node(s) asked, but torchrun "
                         f"started WORLD_SIZE={world}; drop --gpus/--nproc/--nnodes (torchrun's options decide)")
    _join(_default_device(gpus, device), on_join=on_join)


def maybe_launch(argv_for_worker: Sequence[str], gpus: int | None = None, nproc: int | None = None,
                 nnodes: int | None = None, node_rank: int | None = None, master_addr: str | None = None,
                 master_port: int | None = None, launcher: str = "auto", device: str | None = None,
                 debug: bool = False, on_join: Callable[[int], None] | None = None) -> int | None:
    """Start or join a distributed run. None: go on in this process (alone, or as one rank of the group).

    An int: torchrun ran the workers in child processes; the command exits with it (0 = success).
    `argv_for_worker` is the command line the workers re-run (the caller's arguments, without
    the program name); inside a worker this function joins the group and returns None.
    `on_join(rank)` runs once this process has joined a group (the CLI quiets its console on
    ranks other than 0); `debug` keeps torchrun's own log lines.
    """
    if os.environ.get(group.WORKER_ENV) == "1":
        ctx = group.init_from_env(os.environ.get(group.DEVICE_ENV, "cpu"))
        group.silence_other_ranks(ctx.rank)
        if on_join is not None:
            on_join(ctx.rank)
        return None
    if launcher == "slurm":
        join_slurm(gpus, nproc, nnodes, node_rank, master_addr, master_port, device, on_join=on_join)
        return None
    if launcher == "torchrun":
        _check_common(gpus, nproc, nnodes, node_rank, master_port, launcher)
        join_torchrun(gpus, nproc, nnodes, device, on_join=on_join)
        return None
    _check_common(gpus, nproc, nnodes, node_rank, master_port, launcher)
    plan = plan_launch(gpus, nproc, nnodes, node_rank, master_addr, master_port, device)
    if plan is None:
        return None
    return run_launch(plan, argv_for_worker, debug=debug)


if __name__ == "__main__":
    sys.exit(agent_main(sys.argv[1:]))
