"""Reference OpenAI-style SSE server for ``make bench``: raw asyncio, as little work as possible.

``POST /v1/chat/completions`` answers with a chunked ``text/event-stream``: one
``chat.completion.chunk`` event per token (each in its own HTTP chunk, as real servers send
them), a usage chunk, then ``data: [DONE]``. The token count is ``max_tokens`` from the body.

Modes:
  bulk   the whole pre-rendered response in one write: measures the client's CPU per event.
  timed  token k is written at t_parsed + TTFT + k*ITL (absolute times, so no drift); every
         token chunk carries ``"t"``: the server's ``time.monotonic_ns()`` at the write, and
         the first also ``"r"``: when the request was parsed. Lateness (write - due) is kept
         per token and reported by ``GET /stats``.

Timed writes are driven by one Linux ``timerfd`` (ns deadlines, 1 ns timer slack) when
available, because ``loop.call_at`` is millisecond-granular: uvloop rounds delays to whole
ms (and can fire early), asyncio's epoll rounds its timeout up to the next ms. Elsewhere it
falls back to ``loop.call_at``; ``/stats`` says which ran.

Other routes: ``GET /v1/models`` (the loadbench CLI probes it), ``GET /stats[?since=NS&
until=NS]`` (JSON; lateness restricted to writes in that monotonic window), ``POST /reset``
(clears counters, lateness and the first-POST stamp). Listens on 127.0.0.1 only, writes
``{"port": ..., "pid": ...}`` to ``--ready-file`` once listening, exits after ``--max-life-s``.

``--cert PEM`` (private key and certificate chain in one file) also listens with TLS on a
second port, announced as ``"tls_port"``: the same server, counters and routes behind both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import heapq
import json
import os
import re
import ssl
import sys
import time
from array import array
from collections.abc import Callable
from typing import cast

_MODEL = b"bench-model"
_PREFIX = b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"'
_CHOICE = b'"choices":[{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":'
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_END = b"0\r\n\r\n"
_MAX_TOKENS_RE = re.compile(rb'"max_tokens"\s*:\s*(\d+)')
_STREAM_FALSE_RE = re.compile(rb'"stream"\s*:\s*false')
_MAX_TOKENS = 100_000
_MAX_HEAD = 64 * 1024


def _http_chunk(payload: bytes) -> bytes:
    """One SSE event (``data: payload``) framed as one HTTP/1.1 chunk."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def token_event(model: bytes, last: bool, t_ns: int = 0, r_ns: int = 0) -> bytes:
    stamps = b""
    if t_ns:
        stamps = b'"t":%d,' % t_ns
        if r_ns:
            stamps += b'"r":%d,' % r_ns
    finish = b'"stop"' if last else b"null"
    return _http_chunk(_PREFIX + model + b'",' + stamps + _CHOICE + finish + b"}]}")


def tail(model: bytes, tokens: int) -> bytes:
    """The usage chunk, ``[DONE]`` and the last-chunk marker."""
    usage = (
        b'"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}'
        % (
            tokens,
            tokens + 8,
        )
    )
    return _http_chunk(_PREFIX + model + b'",' + usage) + _http_chunk(b"[DONE]") + _END


def json_response(body: bytes, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


class Stats:
    """What ``GET /stats`` reports; lateness as flat ints, filtered by write time on demand."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.events = 0
        self.first_post_ns = 0
        self.write_ns = array("q")
        self.late_ns = array("q")

    def report(self, since_ns: int, until_ns: int) -> dict[str, object]:
        late = sorted(
            lat
            for w, lat in zip(self.write_ns, self.late_ns, strict=True)
            if since_ns <= w <= until_ns
        )
        n = len(late)

        def pct(q: float) -> float | None:
            if not n:
                return None
            return round(late[min(n - 1, max(0, int(q * n + 0.5) - 1))] / 1000, 1)

        return {
            "requests": self.requests,
            "events": self.events,
            "first_post_ns": self.first_post_ns,
            "lateness_us": {"n": n, "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
            "cpu_s": time.process_time(),
            "now_ns": time.monotonic_ns(),
        }


class TimerFD:
    """A min-heap of deadlines behind one Linux timerfd armed at the earliest (ns, absolute)."""

    _CLOCK_MONOTONIC = 1
    _TFD_NONBLOCK_CLOEXEC = 0o4000 | 0o2000000
    _TFD_TIMER_ABSTIME = 1
    _PR_SET_TIMERSLACK = 29

    class _Itimerspec(ctypes.Structure):
        _fields_ = [
            ("interval_sec", ctypes.c_long),
            ("interval_nsec", ctypes.c_long),
            ("value_sec", ctypes.c_long),
            ("value_nsec", ctypes.c_long),
        ]

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._fd = libc.timerfd_create(self._CLOCK_MONOTONIC, self._TFD_NONBLOCK_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        libc.prctl(self._PR_SET_TIMERSLACK, 1, 0, 0, 0)
        self._spec = self._Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self._armed_ns = 0
        self._heap: list[tuple[int, int, Callable[[int], None]]] = []
        self._seq = 0
        self._firing = False  # callbacks reschedule while we fire: arm once, at the end
        loop.add_reader(self._fd, self._fire)

    def call_at_ns(self, due_ns: int, callback: Callable[[int], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due_ns, self._seq, callback))
        if not self._firing and (not self._armed_ns or due_ns < self._armed_ns):
            self._arm(due_ns)

    def _arm(self, due_ns: int) -> None:
        self._armed_ns = due_ns
        self._spec.value_sec, self._spec.value_nsec = divmod(due_ns, 1_000_000_000)
        self._settime(self._fd, self._TFD_TIMER_ABSTIME, self._spec_ref, None)

    def _fire(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._fd, 8)
        self._armed_ns = 0
        heap = self._heap
        self._firing = True
        try:
            while heap and heap[0][0] <= time.monotonic_ns():
                due_ns, _, callback = heapq.heappop(heap)
                callback(due_ns)
        finally:
            self._firing = False
        if heap:
            self._arm(heap[0][0])


class Server:
    def __init__(self, mode: str, ttft_ns: int, itl_ns: int, timer: TimerFD | None) -> None:
        self.mode = mode
        self.ttft_ns = ttft_ns
        self.itl_ns = itl_ns
        self.timer = timer
        self.stats = Stats()
        self.loop_name = ""
        self._bulk: dict[int, bytes] = {}

    def bulk_response(self, tokens: int) -> bytes:
        body = self._bulk.get(tokens)
        if body is None:
            event = token_event(_MODEL, False)
            body = (
                _STREAM_HEAD
                + event * (tokens - 1)
                + token_event(_MODEL, True)
                + tail(_MODEL, tokens)
            )
            self._bulk[tokens] = body
        return body

    def stats_json(self, query: bytes) -> bytes:
        params = dict(p.partition(b"=")[::2] for p in query.split(b"&") if p)
        since = int(params.get(b"since", b"0") or 0)
        until = int(params.get(b"until", b"0") or 0) or 2**62
        report = self.stats.report(since, until)
        report.update(
            mode=self.mode,
            loop=self.loop_name,
            timer="timerfd" if self.timer is not None else "loop.call_at",
            ttft_ms=self.ttft_ns / 1e6,
            itl_ms=self.itl_ns / 1e6,
        )
        return json.dumps(report).encode()


class Connection(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order, one stream at a time."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False  # a timed stream is being written
        self.close_after = False
        self.loop = asyncio.get_running_loop()
        # The timed stream in progress.
        self.tokens = 0
        self.sent = 0
        self.parsed_ns = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.busy = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        while not self.busy and self.transport is not None:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self.transport.close()
                return
            head = buf[:end]
            lower = head.lower()
            length = 0
            i = lower.find(b"\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r", i + 16)
                length = int(lower[i + 16 : j if j > 0 else None])
            total = end + 4 + length
            if len(buf) < total:
                return
            body = buf[end + 4 : total]
            self.buf = buf[total:]
            self.close_after = b"\nconnection: close" in lower
            method, _, rest = head.partition(b" ")
            target = rest.partition(b" ")[0]
            path, _, query = target.partition(b"?")
            self.route(method, path, query, body)
            if self.close_after and not self.busy and self.transport is not None:
                self.transport.close()

    def route(self, method: bytes, path: bytes, query: bytes, body: bytes) -> None:
        server = self.server
        assert self.transport is not None
        if method == b"POST" and path.endswith(b"/chat/completions"):
            parsed_ns = time.monotonic_ns()
            stats = server.stats
            if not stats.first_post_ns:
                stats.first_post_ns = parsed_ns
            stats.requests += 1
            m = _MAX_TOKENS_RE.search(body)
            tokens = min(max(int(m.group(1)), 1), _MAX_TOKENS) if m else 16
            if _STREAM_FALSE_RE.search(body):
                self.transport.write(json_response(completion(tokens)))
                return
            stats.events += tokens
            if server.mode == "bulk":
                self.transport.write(server.bulk_response(tokens))
                return
            self.busy = True
            self.tokens = tokens
            self.sent = 0
            self.parsed_ns = parsed_ns
            self.transport.write(_STREAM_HEAD)
            self.schedule()
        elif method == b"GET" and path.endswith(b"/models"):
            self.transport.write(
                json_response(b'{"object":"list","data":[{"id":"bench-model","object":"model"}]}')
            )
        elif method == b"GET" and path == b"/stats":
            self.transport.write(json_response(server.stats_json(query)))
        elif method == b"POST" and path == b"/reset":
            server.stats.reset()
            self.transport.write(json_response(b"{}"))
        else:
            self.transport.write(json_response(b'{"error":"not found"}', b"404 Not Found"))

    def schedule(self) -> None:
        server = self.server
        due_ns = self.parsed_ns + server.ttft_ns + self.sent * server.itl_ns
        if server.timer is not None:
            server.timer.call_at_ns(due_ns, self.emit)
        else:  # loop.time() is time.monotonic() on asyncio and on uvloop
            self.loop.call_at(due_ns / 1e9, self.emit, due_ns)

    def emit(self, due_ns: int) -> None:
        transport = self.transport
        if transport is None or not self.busy:
            return
        last = self.sent == self.tokens - 1
        now = time.monotonic_ns()
        data = token_event(_MODEL, last, now, self.parsed_ns if self.sent == 0 else 0)
        stats = self.server.stats
        stats.write_ns.append(now)
        stats.late_ns.append(now - due_ns)
        self.sent += 1
        if not last:
            transport.write(data)
            self.schedule()
            return
        transport.write(data + tail(_MODEL, self.tokens))
        self.busy = False
        if self.close_after:
            transport.close()
        elif self.buf:
            self.process()


def completion(tokens: int) -> bytes:
    return (
        b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"%s",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"%s"},'
        b'"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":%d,'
        b'"total_tokens":%d}}' % (_MODEL, b" tok" * tokens, tokens, tokens + 8)
    )


def announce(path: str, facts: dict[str, object]) -> None:
    """Written whole, then renamed: a reader never sees half a file."""
    with open(path + ".tmp", "w") as f:
        json.dump(facts, f)
    os.replace(path + ".tmp", path)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    timer: TimerFD | None = None
    if args.mode == "timed" and not args.no_timerfd and sys.platform.startswith("linux"):
        try:
            timer = TimerFD(loop)
        except (OSError, AttributeError) as exc:
            print(f"refserver: timerfd unavailable ({exc}); using loop.call_at", file=sys.stderr)
    server = Server(args.mode, int(args.ttft_ms * 1e6), int(args.itl_ms * 1e6), timer)
    server.loop_name = type(loop).__module__.split(".")[0]
    async with contextlib.AsyncExitStack() as listeners:

        async def listen(port: int, tls: ssl.SSLContext | None = None) -> int:
            listener = await loop.create_server(
                lambda: Connection(server), "127.0.0.1", port, backlog=4096, ssl=tls
            )
            await listeners.enter_async_context(listener)
            return int(listener.sockets[0].getsockname()[1])

        facts: dict[str, object] = {"port": await listen(args.port)}
        if args.cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(args.cert)
            facts["tls_port"] = await listen(0, tls)
        facts.update(pid=os.getpid(), loop=server.loop_name)
        if args.ready_file:
            announce(args.ready_file, facts)
        ports = ", TLS on ".join(str(facts[k]) for k in ("port", "tls_port") if k in facts)
        print(f"refserver {args.mode} on 127.0.0.1:{ports} ({server.loop_name})", file=sys.stderr)
        await asyncio.sleep(args.max_life_s)  # a bound even if nobody stops us


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["bulk", "timed"], default="bulk")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ttft-ms", type=float, default=100.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--ready-file", default="")
    p.add_argument("--max-life-s", type=float, default=900.0)
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--no-timerfd", action="store_true")
    p.add_argument("--cert", default="", help="PEM key + chain: also listen with TLS")
    args = p.parse_args()
    runner: Callable[..., None] = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            pass
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args))


if __name__ == "__main__":
    main()
