"""A model that lives in Python code, served as an OpenAI-compatible endpoint.

``loadbench serve --adapter module:Class`` wraps a user's class, so such a model is
benchmarked by the same engine, over the same sockets, as any server (and can be the
command of ``[target.launch]``). The class needs one method, ``generate(prompt,
**params)``, and may have ``load(weights_path)``, called once before the port opens. Both
may be plain or ``async``; ``generate`` may return the whole text or yield it in pieces,
and each piece becomes one streamed event, so a token-by-token model shows its real time
to first token. ``params`` are the request's other fields (``max_tokens``,
``temperature``...), as sent.

A plain ``generate`` runs in a worker thread (``anyio.to_thread``), a generator one piece
per call, so the event loop keeps serving. ``slots`` calls run at a time and the rest wait
in order: most Python models are not thread-safe, so the default is one.

Usage counts words (whitespace-separated), as the simulator does: an adapter has no
tokenizer loadbench knows of. The HTTP/1.1 is the simulator's (``sim.http``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import orjson
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteStream

from loadbench.errors import LoadbenchError, UsageError
from loadbench.sim.faults import (
    DONE_AND_END,
    END_OF_BODY,
    BadRequest,
    chunk,
    error_body,
    parse_completion,
)
from loadbench.sim.http import (
    CLIENT_GONE,
    SSE_HEAD,
    Next,
    Request,
    keep_or_close,
    lingering_close,
    read_request,
    response_bytes,
)
from loadbench.sim.process import host_for_url
from loadbench.sim.prompts import count_words

_PATHS = {b"/v1/chat/completions": True, b"/v1/completions": False}  # path -> chat
_NOT_PARAMS = ("model", "messages", "prompt", "stream", "stream_options")
_END = object()


class _Gone(Exception):
    """The client hung up while a piece was sent: not the adapter's failure."""


def load_adapter(target: str, *, name: str | None = None) -> tuple[Any, str]:
    """The adapter instance for ``module:Class``, and the model id it serves.

    Bad input is a UsageError (exit 2): no colon, a module or class that cannot be
    imported or made, no callable ``generate``. The current directory is importable, as
    with ``python -m``, so ``examples.echo_adapter:EchoAdapter`` works from the checkout.
    """
    module_name, sep, class_name = target.partition(":")
    if not sep or not module_name or not class_name:
        raise UsageError(f"--adapter: expected MODULE:CLASS, got {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs the user's code: anything can go wrong
        raise UsageError(f"--adapter {target}: cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, class_name, None)
    if factory is None:
        raise UsageError(f"--adapter {target}: module {module_name!r} has no {class_name!r}")
    try:
        adapter = factory()
    except Exception as exc:
        raise UsageError(f"--adapter {target}: cannot create {class_name}(): {exc}") from None
    if not callable(getattr(adapter, "generate", None)):
        raise UsageError(f"--adapter {target}: {class_name} has no generate(prompt, **params)")
    served = name or getattr(adapter, "name", None)
    return adapter, served if isinstance(served, str) and served.strip() else class_name


async def load_weights(adapter: Any, weights: Path | None) -> None:
    """Calls ``load(weights)`` once, in a worker thread when it is plain; a failure is exit 1."""
    load = getattr(adapter, "load", None)
    if load is None:
        return
    try:
        if inspect.iscoroutinefunction(load):
            await load(weights)
        else:
            await anyio.to_thread.run_sync(load, weights)
    except Exception as exc:
        raise LoadbenchError(f"the adapter's load({weights}) failed: {exc!r}") from None


def _text_of(value: object) -> str:
    """A message's or prompt's text: strings, lists of strings and content parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_text_of(v) for v in value)
    if isinstance(value, dict):
        return _text_of(value.get("text", value.get("content", "")))
    return ""


class AdapterServer:
    """One adapter behind HTTP: routes, and each completion streamed or whole."""

    def __init__(self, adapter: Any, name: str, slots: int = 1) -> None:
        self.adapter = adapter
        self.name = name
        self.slots = anyio.Semaphore(slots)
        self.next_id = 0
        self.models_body = orjson.dumps(
            {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "adapter"}]}
        )

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        conn = BufferedByteStream(stream)
        async with stream:
            with contextlib.suppress(*CLIENT_GONE):
                while True:
                    try:
                        request = await read_request(conn)
                    except BadRequest as exc:
                        body = error_body(str(exc), "invalid_request_error")
                        await conn.send(response_bytes(exc.status, body, keep_alive=False))
                        await lingering_close(conn)
                        return
                    if request is None:
                        return
                    if await self._route(conn, request) is not Next.KEEP:
                        await lingering_close(conn)
                        return

    async def _route(self, conn: BufferedByteStream, request: Request) -> Next:
        keep = request.keep_alive
        chat = _PATHS.get(request.path)
        if chat is not None and request.method == b"POST":
            return await self._completion(conn, request, chat=chat)
        status, body = 200, b'{"status":"ok"}'
        if request.path == b"/v1/models":
            body = self.models_body
        elif request.path != b"/health":
            status = 404
        if status == 200 and request.method != b"GET":
            status = 405
        if status != 200:
            what = "method not allowed" if status == 405 else "no such route"
            line = f"{request.method.decode('latin-1')} {request.path.decode('latin-1')}"
            body = error_body(f"{line}: {what}", "invalid_request_error")
        await conn.send(response_bytes(status, body, keep_alive=keep))
        return keep_or_close(keep)

    async def _generate(
        self, prompt: str, params: dict[str, Any], each: Callable[[str], Awaitable[None]]
    ) -> None:
        """Calls ``generate`` and hands every piece of text to ``each``, in order."""
        generate = self.adapter.generate
        if inspect.isasyncgenfunction(generate) or inspect.iscoroutinefunction(generate):
            result = generate(prompt, **params)
        else:
            result = await anyio.to_thread.run_sync(functools.partial(generate, prompt, **params))
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, str):
            await each(result)
        elif hasattr(result, "__aiter__"):
            async for piece in result:
                await each(_piece(piece))
        elif hasattr(result, "__iter__"):
            pieces: Iterator[object] = iter(result)
            while (piece := await anyio.to_thread.run_sync(next, pieces, _END)) is not _END:
                await each(_piece(piece))
        else:
            raise TypeError(f"generate() returned {type(result).__name__}, not text")

    async def _completion(self, conn: BufferedByteStream, request: Request, *, chat: bool) -> Next:
        keep = request.keep_alive
        try:
            job = parse_completion(request.body, chat=chat, default_max_tokens=1)
        except BadRequest as exc:
            body = error_body(str(exc), "invalid_request_error")
            await conn.send(response_bytes(exc.status, body, keep_alive=keep))
            return keep_or_close(keep)
        data = orjson.loads(request.body)
        prompt = _text_of(data["messages"] if chat else data["prompt"])
        params = {k: v for k, v in data.items() if k not in _NOT_PARAMS}
        self.next_id += 1
        ident, created = f"{'chatcmpl' if chat else 'cmpl'}-adapter{self.next_id}", int(time.time())
        envelope = b'data: {"id":%b,"object":"%b","created":%d,"model":%b,"choices":' % (
            orjson.dumps(ident),
            b"chat.completion.chunk" if chat else b"text_completion",
            created,
            orjson.dumps(self.name),
        )
        head = SSE_HEAD + (b"\r\n" if keep else b"connection: close\r\n\r\n")
        role = b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
        parts: list[str] = []

        def event(text: str | None, finish: bytes = b"null") -> bytes:
            if chat:
                delta = b"{}" if text is None else b'{"content":%b}' % orjson.dumps(text)
                choice = b'[{"index":0,"delta":%b,"finish_reason":%b}]}' % (delta, finish)
            else:
                value = orjson.dumps(text or "")
                choice = b'[{"index":0,"text":%b,"logprobs":null,"finish_reason":%b}]}' % (
                    value,
                    finish,
                )
            return chunk(envelope + choice + b"\n\n")

        async def send(piece: str) -> None:
            if not piece:
                return
            if job.stream:
                first = b"" if parts else head + (chunk(envelope + role + b"\n\n") if chat else b"")
                try:
                    await conn.send(first + event(piece))
                except CLIENT_GONE:
                    raise _Gone from None
            parts.append(piece)

        try:
            async with self.slots:
                await self._generate(prompt, params, send)
        except _Gone:
            return Next.ABORT
        except Exception as exc:
            failure = error_body(f"the adapter's generate() failed: {exc!r}", "server_error", 500)
            if job.stream and parts:  # too late for a status: an error event, then no [DONE]
                await conn.send(chunk(b"data: %b\n\n" % failure) + END_OF_BODY)
                return Next.ABORT
            await conn.send(response_bytes(500, failure, keep_alive=keep))
            return keep_or_close(keep)
        text = "".join(parts)
        completion = count_words(text)
        usage = {
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": job.prompt_tokens + completion,
        }
        if job.stream:
            out = b"" if parts else head + (chunk(envelope + role + b"\n\n") if chat else b"")
            out += event(None, b'"stop"')
            if job.include_usage:
                out += chunk(envelope + b'[],"usage":%b}\n\n' % orjson.dumps(usage))
            await conn.send(out + DONE_AND_END)
            return keep_or_close(keep)
        choice: dict[str, object] = {"index": 0, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice |= {"text": text, "logprobs": None}
        kind = "chat.completion" if chat else "text_completion"
        body = orjson.dumps(
            {
                "id": ident,
                "object": kind,
                "created": created,
                "model": self.name,
                "choices": [choice],
                "usage": usage,
            }
        )
        await conn.send(response_bytes(200, body, keep_alive=keep))
        return keep_or_close(keep)


def _piece(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"generate() yielded {type(value).__name__}, not text")
    return value


async def serve_adapter(
    adapter: Any,
    name: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    slots: int = 1,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serves until cancelled; reports the bound port (``port=0`` picks a free one)."""
    server = AdapterServer(adapter, name, slots)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        task_status.started(listener.extra(SocketAttribute.local_port))
        await listener.serve(server.handle)


def run_adapter(
    adapter: Any,
    name: str,
    host: str,
    port: int,
    *,
    weights: Path | None = None,
    slots: int = 1,
    announce: Callable[[str], None] = print,
) -> None:
    """Blocking entry for ``loadbench serve``: load, then serve; Ctrl-C ends it quietly.

    The announce line is the simulator's, so ``simulator_process`` can start it too.
    """

    async def main() -> None:
        await load_weights(adapter, weights)
        async with anyio.create_task_group() as tg:
            bound = await tg.start(
                functools.partial(serve_adapter, slots=slots), adapter, name, host, port
            )
            announce(
                f"loadbench adapter {name} listening on http://{host_for_url(host)}:{bound}/v1"
            )
            sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main)
