"""Workers as Ray async actors, for load from more than one machine (the ``[ray]`` extra).

Ray is imported only here and only when asked for, through ``importlib`` so that a
machine without it type-checks and runs the same. Each worker is one actor (one CPU, no
restarts, no task retries: a retried shard would fire its load twice), spread across
nodes. The actor runs the same :func:`serve` as a process worker; the driver's messages go
in through ``put`` and the worker's come back in batches through a long-polled ``take``,
as the same orjson bodies. A lost actor shows as an error on ``take``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson

from loadbench.errors import TargetUnreachable, UsageError
from loadbench.workers.links import Link
from loadbench.workers.worker import serve

__all__ = ["RayWorker", "ray_links"]

_TAKE_WAIT_S = 1.0
# For a Ray started here, unless the user set them: no usage statistics (sent to
# Anyscale), and the node on 127.0.0.1 instead of the machine's own address (read when
# Ray is imported, so set before).
_LOCAL_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'loadbench[ray]'") from None


class RayWorker:
    """The actor's class (``ray.remote`` wraps it at run time): a mailbox each way."""

    def __init__(self) -> None:
        self._to_worker, self._inbox = anyio.create_memory_object_stream[bytes | None](math.inf)
        self._from_worker, self._outbox = anyio.create_memory_object_stream[bytes](math.inf)
        self._arrived = time.monotonic()

    async def run(self) -> int:
        """The whole session; returns when the driver says bye or is gone (the lease)."""

        async def receive() -> dict[str, Any] | None:
            body = await self._inbox.receive()
            if body is None:
                return None
            msg = orjson.loads(body)
            return msg if isinstance(msg, dict) else None

        async def send(msg: dict[str, Any]) -> None:
            self._from_worker.send_nowait(orjson.dumps(msg))

        try:
            return await serve(receive, send, lambda: self._arrived)
        finally:
            self._from_worker.close()

    async def put(self, body: bytes | None) -> None:
        self._arrived = time.monotonic()
        self._to_worker.send_nowait(body)

    async def take(self, wait_s: float) -> list[bytes] | None:
        """Every message waiting, after up to ``wait_s`` for the first; None: session over."""
        out: list[bytes] = []
        with anyio.move_on_after(wait_s):
            try:
                out.append(await self._outbox.receive())
            except anyio.EndOfStream:
                return None
        while True:
            try:
                out.append(self._outbox.receive_nowait())
            except anyio.WouldBlock:
                return out
            except anyio.EndOfStream:
                return out or None


class RayLink:
    def __init__(self, rank: int, actor: Any, ray: Any) -> None:
        self.rank = rank
        self.pid: int | None = None  # known from the worker's ready message
        self._actor = actor
        self._ray = ray
        self._run = actor.run.remote()
        self._buffer: deque[bytes] = deque()

    async def send(self, msg: dict[str, Any]) -> None:
        with contextlib.suppress(self._ray.exceptions.RayError):
            await self._actor.put.remote(orjson.dumps(msg))

    async def receive(self) -> dict[str, Any] | None:
        while not self._buffer:
            try:
                batch = await self._actor.take.remote(_TAKE_WAIT_S)
            except self._ray.exceptions.RayError:
                return None  # the actor died or was killed
            if batch is None:
                return None
            self._buffer.extend(batch)
        msg = orjson.loads(self._buffer.popleft())
        return msg if isinstance(msg, dict) else None

    async def kill(self) -> None:
        with contextlib.suppress(Exception):
            self._ray.kill(self._actor, no_restart=True)

    async def close(self, timeout_s: float) -> str | None:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(self._ray.exceptions.RayError):
                await self._actor.put.remote(None)
            with anyio.move_on_after(timeout_s), contextlib.suppress(self._ray.exceptions.RayError):
                await self._run
            await self.kill()
        return None


def _connect(ray: Any, address: str) -> bool:
    """Join or start Ray; True when this run started it (and so stops it after)."""
    if ray.is_initialized():
        return False  # the caller's Ray (a test's, a notebook's): used as it is, left running
    local = _starts_local(address)
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if local:
        options["include_dashboard"] = False  # it probes a cloud metadata address
    try:
        ray.init(address=None if address == "auto" else address, **options)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError alike
        where = os.environ.get("RAY_ADDRESS", "a local Ray") if address == "auto" else address
        raise TargetUnreachable(f"cannot reach Ray at {where}: {exc}") from None
    return True


async def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connect first: ``ray.init`` waits a minute or more on an address that does not
    answer, logging retries, before it fails. ``ray://`` is Ray Client (port 10001 by
    default), a bare ``host[:port]`` the cluster's GCS (6379)."""
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    try:
        with anyio.fail_after(timeout_s):
            stream = await anyio.connect_tcp(
                host.strip("[]"), int(port) if port else (10001 if client else 6379)
            )
        await stream.aclose()
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc) or f"no answer within {timeout_s:g} s"
        raise TargetUnreachable(f"cannot reach Ray at {address}: {reason}") from None


def _starts_local(address: str) -> bool:
    return address == "auto" and not os.environ.get("RAY_ADDRESS")


@contextlib.asynccontextmanager
async def ray_links(count: int, address: str) -> AsyncIterator[list[Link]]:
    if _starts_local(address):
        for key, value in _LOCAL_ENV.items():
            os.environ.setdefault(key, value)
    ray = import_ray()
    if address != "auto" and not ray.is_initialized():
        await _reachable(address)
    started = _connect(ray, address)
    links: list[Link] = []
    try:
        actor_class = ray.remote(RayWorker).options(
            num_cpus=1, max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD"
        )
        for rank in range(count):
            links.append(RayLink(rank, actor_class.remote(), ray))
        yield links
    finally:
        with anyio.CancelScope(shield=True):
            for link in links:
                await link.close(timeout_s=3.0)
            if started:
                ray.shutdown()
