"""Devices, meshes and processes: where a run's arrays live.

Training scales two ways without touching the hand-written backward: over a `seeds` mesh axis
many independent models (vmapped) are spread across devices, and over a `data` axis one model's
batch is split across devices, BatchNorm and the gradients all-reduced (layers.py). A run on
several machines is the same program in one process per machine, joined by
`jax.distributed.initialize` before JAX starts; on CPUs the collectives go through gloo.

On a CPU host JAX sees one device; `start` splits it into as many as asked for, at most one per
core (more would share the cores and gain nothing), unless XLA_FLAGS already sets the count.
Everything here that configures JAX must run before its first computation.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxninja.errors import UsageError

DATA = "data"  # mesh axis of a data-parallel run: the batch is split along it
SEEDS = "seeds"  # mesh axis of a many-seeds run: the models are split along it
_FORCED = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


@dataclass(frozen=True)
class ClusterConfig:
    """One process of a multi-process run, the arguments of jax.distributed.initialize."""

    coordinator: str  # host:port of process 0, which serves the coordination service there
    num_processes: int  # processes in the run, one per machine (or per GPU)
    process_id: int  # this process, 0 .. num_processes-1; 0 writes checkpoints and logs
    timeout: int = 60  # seconds to wait for the coordinator and all processes, then fail
    heartbeat_timeout: int = 100  # seconds of silence before a process is lost (JAX's default)

    def __post_init__(self) -> None:
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(
                f"the coordinator must be HOST:PORT (process 0's address), got {self.coordinator!r}"
            )
        if not (isinstance(self.num_processes, int) and self.num_processes >= 1):
            raise UsageError(f"num-processes must be an integer >= 1, got {self.num_processes!r}")
        if not (isinstance(self.process_id, int) and 0 <= self.process_id < self.num_processes):
            raise UsageError(
                f"process-id must be in [0, {self.num_processes}), got {self.process_id!r}"
            )
        for name in ("timeout", "heartbeat_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                flag = "init-timeout" if name == "timeout" else "heartbeat-timeout"
                raise UsageError(f"{flag} must be an integer >= 1, got {value!r}")


def cpu_cores() -> int:
    """Cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_split_chosen() -> bool:
    """Whether the user split the CPU already (XLA_FLAGS or jax_num_cpu_devices)."""
    return (
        bool(_FORCED.search(os.environ.get("XLA_FLAGS", ""))) or jax.config.jax_num_cpu_devices > 0
    )


def _backend_started() -> bool:
    from jax._src import xla_bridge  # no public API answers this; it only reads a flag

    return xla_bridge.backends_are_initialized()


def start(cpu_devices: int = 1, cluster: ClusterConfig | None = None) -> None:
    """Before any JAX computation: split the CPU into `cpu_devices` devices (per process; at most
    one per core, unless XLA_FLAGS or jax_num_cpu_devices chose otherwise), and join the
    cluster. A no-op for what JAX has already started with (a test session, say)."""
    if _backend_started():
        if cluster is not None and not jax.distributed.is_initialized():
            raise UsageError("join the cluster before any JAX computation in this process")
        return
    if not _cpu_split_chosen() and cpu_devices > 1:
        jax.config.update("jax_num_cpu_devices", min(cpu_devices, cpu_cores()))
    if cluster is None:
        return
    rendezvous(cluster)
    try:
        jax.distributed.initialize(
            cluster.coordinator,
            cluster.num_processes,
            cluster.process_id,
            initialization_timeout=cluster.timeout,
            heartbeat_timeout_seconds=cluster.heartbeat_timeout,
        )
    except Exception as e:  # XLA's errors say what timed out in many lines; one is enough here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"process {cluster.process_id} could not join the run of {cluster.num_processes} "
            f"through {cluster.coordinator} within {cluster.timeout} s ({first[:160]}): "
            "start every process with the same --coordinator (process 0's reachable "
            "address) and --num-processes, or raise --init-timeout"
        ) from None


def rendezvous(cluster: ClusterConfig) -> None:
    """Meet every process on the coordinator's port before JAX does, within cluster.timeout.

    JAX's own handshake aborts the process from C++ when a peer never comes (no exception to
    catch), so this one runs first, in Python: process 0 listens and waits for the others, they
    retry until it answers, and any of them that gives up says why in one line. Then process 0
    frees the port for JAX's coordination service, which every process joins at once.
    """
    host, _, port_text = cluster.coordinator.rpartition(":")
    port, deadline = int(port_text), time.monotonic() + cluster.timeout
    hello = f"jaxninja {cluster.process_id} {cluster.num_processes}\n".encode()
    if cluster.process_id == 0:
        _gather(port, cluster.num_processes, deadline, cluster.timeout)
        return
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host.strip("[]"), port), timeout=max(left, 0.1)) as s:
                s.sendall(hello)
                answer = s.makefile("rb").readline().decode(errors="replace").strip()
            break
        except OSError as e:
            if left <= 0:
                raise UsageError(
                    f"process {cluster.process_id} could not reach the coordinator at "
                    f"{cluster.coordinator} within {cluster.timeout} s ({e.strerror or e}): "
                    "start process 0 there first, check the address and port, "
                    "or raise --init-timeout"
                ) from None
            time.sleep(0.2)
    if answer != "go":
        raise UsageError(
            f"the coordinator at {cluster.coordinator} refused process "
            f"{cluster.process_id}: {answer or 'no answer'}"
        )


def _gather(port: int, n: int, deadline: float, timeout: int) -> None:
    """Process 0's side of `rendezvous`: accept the other n - 1 processes, then release them."""
    try:
        server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    except OSError:
        try:
            server = socket.create_server(("", port))
        except OSError as e:
            raise UsageError(
                f"process 0 cannot listen on port {port} ({e.strerror or e}): another run may "
                "hold it; choose another port in --coordinator"
            ) from None
    peers: dict[int, socket.socket] = {}
    with server:
        while len(peers) < n - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                for peer in peers.values():
                    peer.close()
                missing = sorted(set(range(1, n)) - set(peers))
                raise UsageError(
                    f"process 0 waited {timeout} s and process(es) {missing} of {n} never "
                    "connected: start them with the same --coordinator and --num-processes, "
                    "or raise --init-timeout"
                )
            server.settimeout(left)
            try:
                peer, _ = server.accept()
                peer.settimeout(max(deadline - time.monotonic(), 1.0))
                words = peer.makefile("rb").readline().decode(errors="replace").split()
            except OSError:
                continue
            reason = _refusal(words, n, peers)
            if reason:
                peer.sendall(f"{reason}\n".encode())
                peer.close()
                continue
            peers[int(words[1])] = peer
        for peer in peers.values():
            peer.sendall(b"go\n")
        for peer in peers.values():  # they close first, so no port is left in TIME_WAIT here
            try:
                peer.recv(1)
            except OSError:
                pass
            peer.close()


def _refusal(words: list[str], n: int, peers: dict[int, socket.socket]) -> str:
    """Why a greeting (`jaxninja ID N`) is refused, or ''."""
    if len(words) != 3 or words[0] != "jaxninja" or not (words[1] + words[2]).isdigit():
        return "not a jaxninja process"
    pid, count = int(words[1]), int(words[2])
    if count != n:
        return f"it says --num-processes {count}, process 0 says {n}"
    if pid in peers:
        return f"process id {pid} joined twice"
    return ""


@dataclass(frozen=True)
class RunPlan:
    """Where a run's models and batches go: the one home of every device and process decision.

    The CLI asks it how to start JAX (`start`); train asks it for the mesh (`mesh`).
    """

    models: int = 1  # --seeds: models trained at once, vmapped, split over a `seeds` axis
    devices: int | None = None  # --devices, over all processes; None: the default for the run
    cluster: ClusterConfig | None = None  # a multi-process run's process, or None

    def __post_init__(self) -> None:
        for name in ("models", "devices"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise UsageError(f"{name} must be an integer >= 1, got {value!r}")

    @property
    def processes(self) -> int:
        return self.cluster.num_processes if self.cluster else 1

    def cpu_devices_per_process(self) -> int:
        """What to split each process's CPU into: all of --devices' share; for many models by
        default one device per core (one CPU device keeps about one core busy)."""
        if self.devices is None:
            return cpu_cores() if self.models > 1 else 1
        if self.devices % self.processes:
            raise UsageError(
                f"--devices {self.devices} does not split evenly over {self.processes} processes"
            )
        return self.devices // self.processes

    def start(self) -> None:
        """Before any JAX computation: split the CPU, join the cluster."""
        start(self.cpu_devices_per_process(), self.cluster)

    def mesh(self, batch_size: int) -> Mesh | None:
        """The mesh of the run (JAX started): a `seeds` axis for many models, a `data` axis for
        one model's batch over several devices, or None for one model on one device."""
        devices = self.devices
        if devices is not None:
            check_device_count(devices)
        if self.models > 1:
            if jax.process_count() > 1:
                raise UsageError(
                    "--seeds runs in one process: start one run per machine, each with its own "
                    "--seed"
                )
            if devices is None:  # as many as divide the models evenly
                have = min(jax.device_count(), self.models)
                devices = max(d for d in range(1, have + 1) if self.models % d == 0)
            elif self.models % devices:
                raise UsageError(
                    f"--seeds {self.models} does not split evenly over --devices {devices}: "
                    "choose a device count that divides the number of seeds"
                )
            return make_mesh(devices, SEEDS)
        if jax.process_count() > 1:
            if devices not in (None, jax.device_count()):
                raise UsageError(
                    f"a multi-process run uses all {jax.device_count()} devices of its "
                    f"processes, not --devices {devices}: give each process the same share"
                )
            devices = jax.device_count()
        devices = devices or 1
        if batch_size % devices:
            raise UsageError(
                f"the batch of {batch_size} does not split evenly over {devices} devices: "
                "choose a --batch-size that the device count divides"
            )
        return make_mesh(devices, DATA) if devices > 1 else None


def check_device_count(n: int) -> None:
    """At least `n` devices exist (over all processes)."""
    have, platform = jax.device_count(), jax.default_backend()
    if n > have:
        hint = (
            f" (a CPU is split into one device per core; set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={n} to split it further)"
            if platform == "cpu"
            else ""
        )
        raise UsageError(f"--devices {n}: only {have} {platform} device(s) exist here{hint}")


def make_mesh(n: int, axis: str) -> Mesh:
    """A 1-D mesh of the first n devices (all processes'), the axis named `axis`."""
    return Mesh(np.asarray(jax.devices()[:n]), (axis,))


def place(tree: Any, mesh: Mesh, axis: str | None = None) -> Any:
    """Host arrays onto the mesh: replicated, or split along their axis 0 over mesh `axis`.

    Built piece by piece from the host copy, which every process holds whole, so it works the
    same in one process and in many (where jax.device_put cannot reach other hosts' devices).
    """
    sharding = NamedSharding(mesh, P() if axis is None else P(axis))

    def put(x: Any) -> jax.Array:
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def fetch(tree: Any) -> Any:
    """Device arrays to numpy; a replicated array that spans processes is read from this one."""

    def get(x: jax.Array) -> np.ndarray:
        return np.asarray(x if x.is_fully_addressable else x.addressable_data(0))

    return jax.tree.map(get, tree)


def is_main_process() -> bool:
    """Process 0 writes checkpoints, plots and logs; the others compute the same and stay quiet."""
    return jax.process_index() == 0


def lost_process(error: Exception, step: int, kept: str | None) -> str:
    """The one line of a run whose collective failed: a peer died (on CPUs gloo reports it at
    once; where a collective hangs instead, JAX's heartbeat timeout ends the run)."""
    n, me = jax.process_count(), jax.process_index()
    who = f"process {1 - me}" if n == 2 else f"another of the {n} processes"
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    then = (
        f"the last checkpoint is {kept}: start every process again with --resume"
        if kept
        else "no checkpoint was written yet: start the run again"
    )
    return f"process {me} lost {who} at step {step} ({first}); {then}"
