"""The simulated server's model: batch slots, token timing and faults, one request at a time.

One ``Simulator`` is one server's shared state (the slots, the counters, the random
generators) and how it answers each request on a connection: routes, then a completion
streamed or whole, each token at its absolute due time. ``serve`` in
:mod:`loadbench.sim.server` listens and hands it every connection. ``SimConfig`` and the
pure parts (request parsing, fault draw, response bytes) live in ``sim.faults``; the
tokenizer, prefix cache and early stops in ``sim.prompts``; the hand-written HTTP/1.1 in
``sim.http``; llama.cpp's formats in ``sim.llamacpp``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import anyio.abc
import orjson
from anyio.streams.buffered import BufferedByteStream

from loadbench.sim.faults import (
    BAD_JSON_CHUNK,
    END_OF_BODY,
    HTTP_401_BODY,
    HTTP_429_BODY,
    HTTP_500_BODY,
    HTTP_503_BODY,
    MALFORMED_CHUNK,
    NOT_SSE_BODY,
    BadRequest,
    Completion,
    Fault,
    FaultPlan,
    Outcome,
    SimConfig,
    StreamFrames,
    draw_fault,
    empty_tail,
    error_body,
    parse_completion,
    stream_frames,
    whole_body,
)
from loadbench.sim.http import (
    CLIENT_GONE,
    JSON,
    SSE_HEAD,
    Next,
    Request,
    arm_reset,
    keep_or_close,
    lingering_close,
    read_request,
    response_bytes,
)
from loadbench.sim.llamacpp import PROMETHEUS, Counters, stamped_end
from loadbench.sim.prompts import PrefixCache, early_length, tokenize
from loadbench.sim.served import Lineup, Served

_COMPLETION_PATHS = (b"/v1/chat/completions", b"/v1/completions")
_POST_ONLY = (*_COMPLETION_PATHS, b"/tokenize")
# Faults answered as soon as the request is read, without a slot:
# status, content type, body, extra header lines.
_AT_ONCE = {
    Fault.HTTP_500: (500, JSON, HTTP_500_BODY, b""),
    Fault.HTTP_429: (429, JSON, HTTP_429_BODY, b"retry-after: 1\r\n"),
    Fault.HTTP_503: (503, JSON, HTTP_503_BODY, b""),
    Fault.HTTP_401: (401, JSON, HTTP_401_BODY, b'www-authenticate: Bearer realm="sim"\r\n'),
    Fault.NOT_SSE: (200, b"text/html; charset=utf-8", NOT_SSE_BODY, b""),
}
# Faults that add one broken event after the first token; every token still follows.
_BAD_EVENTS = {Fault.MALFORMED: MALFORMED_CHUNK, Fault.BAD_JSON: BAD_JSON_CHUNK}
_ABORTED = (Outcome.DROP, Outcome.RESET, Outcome.CLIENT_DISCONNECT)


@dataclass(slots=True)
class _Progress:
    """What one response has done so far: a fault counts from the moment it begins.

    A client that gives up during a stall or a silence is the fault's doing, so the fault
    is counted; one that leaves before any fault began is a plain disconnect.
    """

    outcome: Outcome = Outcome.CLIENT_DISCONNECT


# -- the simulated model -----------------------------------------------------------------


class Simulator:
    """One server's shared state: the slots, the counters, the random generators."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.slots = anyio.Semaphore(config.slots)
        # Faults and jitter draw from separate generators, so a seeded run gives the n-th
        # request the same fault however the jitter draws interleave.
        self.fault_rng = random.Random(config.seed)
        self.jitter_rng = random.Random(None if config.seed is None else f"jitter:{config.seed}")
        self.early_rng = random.Random(None if config.seed is None else f"early:{config.seed}")
        self.cache = PrefixCache() if config.prefix_cache else None
        self.prefix_cache_hit_tokens = 0
        self.counts = {o.value: 0 for o in Outcome}
        self.requests = self.tokens_sent = self.active = self.queued = self.max_active = 0
        self.llamacpp = Counters()  # /metrics: the sums of every ``timings`` object sent
        self.next_id = 0
        self.lineup = Lineup(
            config.models, config.broken_models, ttft_ms=config.ttft_ms, itl_ms=config.itl_ms
        )

    def stats(self) -> bytes:
        return orjson.dumps(
            {
                "requests": self.requests,
                "outcomes": self.counts,
                "tokens_sent": self.tokens_sent,
                "active": self.active,
                "queued": self.queued,
                "max_active": self.max_active,
                "prefix_cache_hit_tokens": self.prefix_cache_hit_tokens,
            }
        )

    def metrics(self) -> bytes:
        """Prometheus text exposition (0.0.4) in llama.cpp's names, for scrapers."""
        return self.llamacpp.text(self.active, self.queued, cached=self.cache is not None)

    def _finished(self, job: Completion, predicted_n: int, prompt_s: float, first: float) -> bytes:
        """The timings of a response whose last token is due now, counted for /metrics.

        ``prompt_s``: slot taken to first token; ``first``: the clock at the first token,
        so one token has no decode time at all.
        """
        predicted_s = anyio.current_time() - first if predicted_n > 1 else 0.0
        cached = job.cached_tokens or 0
        prompt_n = job.prompt_tokens - cached
        return self.llamacpp.timings(prompt_n, prompt_s, predicted_n, predicted_s, cached)

    def _prefill_s(self, job: Completion, served: Served) -> float:
        """The TTFT once a slot is taken: fixed, plus a cost per prompt token not cached."""
        uncached = job.prompt_tokens - (job.cached_tokens or 0)
        return self._jittered(served.ttft_s + self.config.prefill_ms_per_token * uncached / 1e3)

    def _jittered(self, seconds: float) -> float:
        jitter = self.config.jitter
        return max(0.0, seconds * self.jitter_rng.gauss(1.0, jitter)) if jitter else seconds

    def _gap(self, itl_s: float) -> float:
        """Evaluated per token, so each gap reflects the batch at the moment it starts."""
        factor = 1.0 + self.config.batch_itl_factor * (self.active - 1)
        return self._jittered(itl_s * factor)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[float]:
        """Holds one decoding slot (FIFO: anyio's Semaphore is fair); yields when it was taken."""
        self.queued += 1
        try:
            await self.slots.acquire()
        finally:
            self.queued -= 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            yield anyio.current_time()
        finally:
            self.active -= 1
            self.slots.release()

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        """One connection: requests in order until the client closes or a response ends it."""
        conn = BufferedByteStream(stream)
        async with stream:
            with contextlib.suppress(*CLIENT_GONE):
                while True:
                    try:
                        request = await read_request(conn)
                    except BadRequest as exc:
                        # Counted as a request too, so the outcomes always add up.
                        self.requests += 1
                        self.counts[Outcome.BAD_REQUEST] += 1
                        body = error_body(str(exc), "invalid_request_error")
                        await conn.send(response_bytes(exc.status, body, keep_alive=False))
                        await lingering_close(conn)
                        return
                    if request is None:
                        return
                    after = await self._route(conn, request)
                    if after is not Next.KEEP:
                        if after is Next.CLOSE:
                            await lingering_close(conn)
                        return

    async def _route(self, conn: BufferedByteStream, request: Request) -> Next:
        """Answers one request and says what becomes of the connection."""
        method, path, keep = request.method, request.path, request.keep_alive
        if path in _COMPLETION_PATHS and method == b"POST":
            self.requests += 1
            return await self._completion(conn, request, chat=path == b"/v1/chat/completions")
        status, content_type = 200, JSON
        if path == b"/tokenize" and method == b"POST":  # llama.cpp's and vLLM's, beside /v1
            try:
                body = tokenize(request.body)
            except ValueError as exc:
                status, body = 400, error_body(str(exc), "invalid_request_error")
            await conn.send(response_bytes(status, body, keep_alive=keep))
            return keep_or_close(keep)
        if path == b"/health":
            body = b'{"status":"ok"}'
        elif path == b"/v1/models":
            body = self.lineup.body
        elif path in (b"/stats", b"/v1/stats"):
            body = self.stats()
        elif path == b"/metrics":
            body, content_type = self.metrics(), PROMETHEUS
        else:
            status = 405 if path in _POST_ONLY else 404
        if method != b"GET" and status == 200:
            status = 405
        if status != 200:
            what = "method not allowed" if status == 405 else "no such route"
            message = f"{method.decode('latin-1')} {path.decode('latin-1')}: {what}"
            body, content_type = error_body(message, "invalid_request_error"), JSON
        await conn.send(response_bytes(status, body, keep_alive=keep, content_type=content_type))
        return keep_or_close(keep)

    async def _completion(self, conn: BufferedByteStream, request: Request, *, chat: bool) -> Next:
        keep = request.keep_alive
        try:
            default = self.config.max_tokens_default
            keep_words = self.cache is not None
            job = parse_completion(
                request.body, chat=chat, default_max_tokens=default, keep_words=keep_words
            )
            served = self.lineup.find(job.model)
            if served is None:
                raise BadRequest(f"model '{job.model}' not found", 404)
        except BadRequest as exc:
            self.counts[Outcome.BAD_REQUEST] += 1
            code = "model_not_found" if exc.status == 404 else None
            body = error_body(str(exc), "invalid_request_error", code)
            await conn.send(response_bytes(exc.status, body, keep_alive=keep))
            return keep_or_close(keep)
        if served.broken:  # listed, but it never loaded: every request fails at once
            self.counts[Outcome.HTTP_500] += 1
            message = f"model '{served.name}' failed to load (simulated)"
            body = error_body(message, "server_error", 500)
            await conn.send(response_bytes(500, body, keep_alive=keep))
            return keep_or_close(keep)
        words, words_json, whole = served.script()
        if whole:  # a verdict: its words once, then "stop" (unless max_tokens cuts it)
            n = min(job.max_tokens, len(words))
            job = dataclasses.replace(job, max_tokens=n, stop=n == len(words))
        plan = draw_fault(self.fault_rng, self.config, job.max_tokens)
        if not (whole or job.ignore_eos):  # after the fault draw, which it leaves alone
            early = early_length(self.early_rng, self.config.early_stop_rate, job.max_tokens)
            if early is not None:
                job = dataclasses.replace(job, max_tokens=early, stop=True)
                plan = dataclasses.replace(plan, drop_after=min(plan.drop_after, early))
        at_once = _AT_ONCE.get(plan.fault)
        if at_once is not None:
            status, content_type, body, extra = at_once
            self.counts[Outcome(plan.fault.value)] += 1
            response = response_bytes(
                status, body, keep_alive=keep, extra=extra, content_type=content_type
            )
            await conn.send(response)
            return keep_or_close(keep)
        if plan.fault is Fault.RESET:  # the request was read whole, so no unread input
            self.counts[Outcome.RESET] += 1
            arm_reset(conn)
            return Next.ABORT
        if self.cache is not None:  # looked up on admission; its blocks count from now on
            cached = self.cache.admit(served.name, job.words)
            self.prefix_cache_hit_tokens += cached
            job = dataclasses.replace(job, cached_tokens=cached)
        self.next_id += 1
        ident = f"{'chatcmpl' if chat else 'cmpl'}-sim{self.next_id}"
        gone = False

        async def watch(scope: anyio.CancelScope) -> None:
            """Notices a client that hangs up while we wait, so its slot frees at once."""
            nonlocal gone
            try:
                data = await conn.receive()
            except CLIENT_GONE:
                gone = True
                scope.cancel()
            else:
                conn.feed_data(data)  # a pipelined next request: keep it for the loop

        progress = _Progress()
        async with anyio.create_task_group() as tg:
            if not conn.buffer:
                tg.start_soon(watch, tg.cancel_scope)
            try:
                if job.stream:
                    frames = stream_frames(job, ident, int(time.time()), words_json)
                    progress.outcome = await self._stream(
                        conn, job, frames, served, plan, keep, progress
                    )
                else:
                    empty = plan.fault is Fault.EMPTY
                    body = whole_body(job, ident, int(time.time()), empty=empty, words=words)
                    progress.outcome = await self._whole(
                        conn, job, body, served, plan, keep, progress
                    )
            except CLIENT_GONE:
                gone = True
            tg.cancel_scope.cancel()
        self.counts[progress.outcome] += 1
        if self.cache is not None and progress.outcome is Outcome.OK:  # the answer is cached too
            answer = (words[k % len(words)] for k in range(job.max_tokens))
            self.cache.remember(served.name, (*job.words, *answer))
        return Next.ABORT if gone or progress.outcome in _ABORTED else keep_or_close(keep)

    async def _stream(
        self,
        conn: BufferedByteStream,
        job: Completion,
        frames: StreamFrames,
        served: Served,
        plan: FaultPlan,
        keep: bool,
        progress: _Progress,
    ) -> Outcome:
        """Writes each event at its absolute due time, so lateness never accumulates.

        Faults: SILENT holds everything after the head for ``stall_s``; EMPTY finishes
        after prefill with no token; MALFORMED and BAD_JSON add one bad event after the
        first token; STALL waits ``stall_s`` after it; DROP returns after ``drop_after``
        tokens for the caller to close; NO_DONE sends every token without a finish_reason,
        then the terminating chunk without ``[DONE]``. A stream that ends with its
        finish_reason carries ``timings`` in its last data event; DROP, NO_DONE and EMPTY
        send none.
        """
        head = SSE_HEAD + (b"\r\n" if keep else b"connection: close\r\n\r\n")
        fault, n = plan.fault, job.max_tokens
        outcome = Outcome.OK if fault is Fault.NONE else Outcome(fault.value)
        no_done = fault is Fault.NO_DONE
        last, tail = frames.last, frames.tail
        async with self._slot() as acquired:
            deadline = acquired
            if fault is Fault.SILENT:
                await conn.send(head)
                progress.outcome = outcome
                deadline += self.config.stall_s  # the whole schedule shifts with it
                await anyio.sleep_until(deadline)
                head = b""
            if head or frames.role:
                await conn.send(head + frames.role)  # role delta before prefill, as vLLM does
            prefill_from = first = deadline
            deadline += self._prefill_s(job, served)
            if fault is Fault.EMPTY:
                await anyio.sleep_until(deadline)
                await conn.send(empty_tail(job, frames.ident, frames.created))
                return outcome
            for k in range(n):
                if k:
                    deadline += self._gap(served.itl_s)
                await anyio.sleep_until(deadline)
                if k == 0:
                    first = anyio.current_time()
                final = k == n - 1
                dropping = fault is Fault.DROP and k + 1 == plan.drop_after
                stalling = fault is Fault.STALL and k == 0
                if final and not no_done:
                    if not dropping:  # once per request: the timings, then the last bytes
                        prompt_s = first - prefill_from
                        timings = self._finished(job, n, prompt_s, first)
                        last, tail = stamped_end(job, frames, timings)
                    out = last
                else:
                    out = frames.tokens[k % len(frames.tokens)]
                bad = _BAD_EVENTS.get(fault) if k == 0 else None
                if bad is not None:
                    out += bad
                if final and not dropping and not stalling:
                    out += END_OF_BODY if no_done else tail
                await conn.send(out)
                self.tokens_sent += 1
                if dropping:
                    return outcome  # the caller closes: no terminating chunk
                if bad is not None or stalling:
                    progress.outcome = outcome
                if stalling:
                    deadline += self.config.stall_s  # the rest of the schedule shifts with it
                    if n == 1:
                        await anyio.sleep_until(deadline)
                        await conn.send(tail)
        return outcome

    async def _whole(
        self,
        conn: BufferedByteStream,
        job: Completion,
        body: bytes,
        served: Served,
        plan: FaultPlan,
        keep: bool,
        progress: _Progress,
    ) -> Outcome:
        """A non-streaming answer after the full simulated time.

        Of the faults that take a slot, DROP (closed before any byte), SILENT (the head,
        then ``stall_s`` of silence, then the body) and EMPTY apply; the others need a
        stream, so such a request gets a normal answer and counts as ok.

        The body carries ``timings`` like llama.cpp's, except under EMPTY (no token to
        time) and SILENT (its head, with the body's length, went out before the timings
        were known).
        """
        fault = plan.fault
        empty = fault is Fault.EMPTY
        n = plan.drop_after if fault is Fault.DROP else 1 if empty else job.max_tokens
        async with self._slot() as acquired:
            deadline = acquired
            if fault is Fault.SILENT:
                response = response_bytes(200, body, keep_alive=keep)
                await conn.send(response[: len(response) - len(body)])
                progress.outcome = Outcome.SILENT
                deadline += self.config.stall_s
            prefill_from = first = deadline
            deadline += self._prefill_s(job, served)
            for k in range(n):
                if k:
                    deadline += self._gap(served.itl_s)
                await anyio.sleep_until(deadline)  # per token: the batch may change meanwhile
                if k == 0:
                    first = anyio.current_time()
            if fault is Fault.DROP:
                return Outcome.DROP  # closed before any byte of the response
            if fault is Fault.SILENT:
                response = body
            else:
                if not empty:
                    prompt_s = first - prefill_from
                    timings = self._finished(job, n, prompt_s, first)
                    body = body[:-1] + b',"timings":%b}' % timings
                response = response_bytes(200, body, keep_alive=keep)
            await conn.send(response)
            self.tokens_sent += 0 if empty else n
        return Outcome(fault.value) if fault in (Fault.SILENT, Fault.EMPTY) else Outcome.OK
