"""Sends one streaming completion request and turns what came back into a RequestRecord.

The hot path per network read is: one ``perf_counter_ns()`` stamp, SSE split, one orjson
parse per event, an int appended per content event. Parsed payloads are never kept
(../shared/research/client-limits.md §3: kept dicts caused 150-300 ms GC pauses).
Every outcome, including a bug in this module, ends as a record: nothing a server does
can raise out of :meth:`LoadClient.execute`.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter_ns
from types import TracebackType
from typing import Self

import anyio
import httpx
import orjson

from loadbench import __version__
from loadbench.http.events import EventReader
from loadbench.http.stream import StreamState, item_body, read_completion, request_body
from loadbench.http.transport import (
    Body,
    LeanTransport,
    MalformedResponse,
    Origin,
    origin,
    render,
    tls_context,
)
from loadbench.records import ErrorKind, RequestRecord, TokenSource, http_error
from loadbench.scenario import Api, RequestSpec

_ERROR_BODY_BYTES = 4096
_DETAIL_CHARS = 300


class TransportKind:
    AUTO = "auto"  # lean for http:// and https://; httpx's own only when asked (proxies, HTTP/2)
    LEAN = "lean"
    HTTPX = "httpx"


def _ignore_cookies(response: httpx.Response) -> None:
    """A load test has no session; parsing Set-Cookie cost ~26% of client CPU when kept."""


def make_transport(
    base_url: str, *, kind: str, max_connections: int, verify: bool, **lean: bool
) -> httpx.AsyncBaseTransport:
    """The lean transport for http:// and https:// targets; httpx's own (its pool, HTTP/2,
    proxies) when asked for with ``--transport httpx``. An https target's TLS context is
    built here, before the run, not inside the first request's stopwatch. ``lean``: its
    ``fresh`` (a new connection per request; httpx's pool takes it too) and ``quickack``."""
    scheme = httpx.URL(base_url).scheme
    lean_schemes = ("http", "https")
    if kind == TransportKind.LEAN or (kind == TransportKind.AUTO and scheme in lean_schemes):
        context = tls_context(verify) if scheme == "https" else verify
        return LeanTransport(verify=context, **lean)
    keep = 0 if lean.get("fresh") else max_connections
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=keep)
    return httpx.AsyncHTTPTransport(limits=limits, verify=verify, retries=0)


def endpoint(base_url: str, api: Api) -> str:
    path = "/chat/completions" if api is Api.CHAT else "/completions"
    return base_url.rstrip("/") + path


class LoadClient:
    """One httpx client shared by every worker of a run, over the transport picked above."""

    def __init__(
        self,
        *,
        base_url: str,
        api: Api,
        spec: RequestSpec,
        timeout_s: float,
        max_connections: int,
        api_key: str | None = None,
        verify: bool = True,
        transport: str = TransportKind.AUTO,
        preconnect: bool = True,
        connections: str = "reuse",
        quickack: bool = False,
    ) -> None:
        self._url = endpoint(base_url, api)
        self._preconnect = preconnect
        self._api = api
        self._spec = spec
        self._timeout_s = timeout_s
        self._secret = api_key or None
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if spec.stream else "application/json",
            "accept-encoding": "identity",  # compressed SSE would defeat per-event stamps
            "user-agent": f"loadbench/{__version__}",
        }
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        lean = {"fresh": connections == "fresh", "quickack": quickack}
        self._transport = make_transport(
            base_url, kind=transport, max_connections=max_connections, verify=verify, **lean
        )
        self._lean = self._transport if isinstance(self._transport, LeanTransport) else None
        # Whether requests report what opening their connection cost (the lean transport
        # does), and who is told: (connect ns, warmup), set by the engine for each stage.
        self.measures_connects = self._lean is not None
        self.on_connect: Callable[[int, bool], None] | None = None
        self._client = httpx.AsyncClient(
            transport=self._transport,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,  # a redirected POST is the server's answer, not a retry
            trust_env=False,
        )
        # httpx copies any Cookies object it is given and wraps every response for the jar:
        # silence the extraction itself (half of httpx's per-request cost, measured).
        setattr(self._client.cookies, "extract_cookies", _ignore_cookies)  # noqa: B010
        self._requests: dict[tuple[str, str], tuple[httpx.Request, bytes]] = {}
        # The lean transport's idle list for this client's one URL (None over httpx's pool).
        self._origin: Origin | None = (
            origin(httpx.URL(self._url)) if self._lean is not None else None
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self._client.aclose()

    @property
    def stale_reuses(self) -> int:
        """Requests resent because a reused connection had been closed before them."""
        return self._lean.stale_reuses if self._lean is not None else 0

    async def preconnect(self, n: int) -> int:
        """Opens connections until ``n`` are idle, before a stage's window, within the timeout;
        how many it opened (none over httpx's pool, or with ``preconnect=False``: benchmarks)."""
        if self._lean is None or not self._preconnect or n <= 0:
            return 0
        with anyio.move_on_after(self._timeout_s):
            return await self._lean.preconnect(httpx.URL(self._url), n)
        return 0

    def _request(self, model: str, prompt: str) -> tuple[httpx.Request, bytes]:
        """The request for a prompt, and its bytes on the wire: built once, sent many times."""
        key = (model, prompt)
        found = self._requests.get(key)
        if found is None:
            body = request_body(model, prompt, self._api, self._spec)
            request = self._client.build_request("POST", self._url, content=body)
            found = self._requests[key] = (request, render(request, body))
        return found

    def body(self, model: str, messages: list[dict[str, str]], fields: dict[str, object]) -> bytes:
        """A workload request's body, with this client's ``[request]`` settings."""
        return item_body(model, messages, fields, self._api, self._spec)

    async def execute(
        self,
        *,
        index: int,
        warmup: bool,
        model: str,
        prompt: str,
        due_ns: int | None = None,
        body: bytes | None = None,
        answer: list[str] | None = None,
    ) -> RequestRecord:
        """Send one request, bounded by the target timeout; never raises except cancellation.
        ``due_ns``: when the schedule wanted it sent (open loop), the latencies' origin;
        ``None``: now (closed loop). ``body``: a workload's own body, sent instead of
        ``prompt``'s; ``answer``: a list that gets the answer's content pieces."""
        if body is None:
            request, payload = self._request(model, prompt)
        else:
            request = self._client.build_request("POST", self._url, content=body)
            payload = render(request, body)
        state = StreamState(self._api is Api.CHAT, answer)
        status: int | None = None
        error: str | None = None
        detail: str | None = None
        got_head = False
        connects: list[int] = []
        sent_ns = perf_counter_ns()
        with anyio.move_on_after(self._timeout_s) as scope:
            try:
                # Straight to the transport: no auth, hooks, cookies, mounts or redirects here,
                # and AsyncClient.send's layers for them cost ~15 µs per request. The request
                # was built by the client: it has the headers and timeouts send would add.
                response: httpx.Response | None = None
                stream: httpx.AsyncByteStream
                if self._lean is not None and self._origin is not None:
                    head, stream = await self._lean.exchange(
                        self._origin, payload, request, connects
                    )
                    status, headers = head.status, head.headers
                else:
                    response = await self._transport.handle_async_request(request)
                    response.request = request
                    status, headers, stream = (
                        response.status_code,
                        response.headers.raw,
                        _raw(response),
                    )
                got_head = True
                try:
                    if status != 200:
                        error = http_error(status)
                        detail = await _read_error_body(stream)
                    elif not self._spec.stream:
                        if response is None:  # httpx undoes a Content-Encoding, if any
                            response = httpx.Response(status, headers=headers, stream=stream)
                        error = read_completion(await response.aread(), state, perf_counter_ns())
                    elif not (ctype := _content_type(headers)).startswith("text/event-stream"):
                        error = ErrorKind.NOT_SSE
                        detail = f"content-type {ctype or None!r}"
                    else:
                        if isinstance(stream, Body) and stream.pumpable:
                            reader = EventReader(state.feed, stream.decoder)
                            await stream.pump(reader)
                        else:
                            reader = EventReader(state.feed)
                            async for data in stream:
                                reader.body(data)
                        error = state.outcome(reader.close())
                        if error is not None:
                            detail = state.describe(error)
                finally:
                    await stream.aclose()
            except httpx.TimeoutException as exc:
                error, detail = ErrorKind.TIMEOUT, str(exc)
            except httpx.ConnectError as exc:
                error, detail = ErrorKind.CONNECT, str(exc)
            except MalformedResponse as exc:
                error, detail = ErrorKind.PROTOCOL, str(exc)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, OSError) as exc:
                error = ErrorKind.DROPPED if got_head else ErrorKind.NO_RESPONSE
                detail = str(exc) or type(exc).__name__
            except httpx.HTTPError as exc:
                error, detail = ErrorKind.PROTOCOL, str(exc) or type(exc).__name__
            except Exception as exc:  # a bug here must cost one request, not the run
                error, detail = ErrorKind.CLIENT, f"{type(exc).__name__}: {exc}"
        end_ns = perf_counter_ns()
        if scope.cancelled_caught:
            error, detail = ErrorKind.TIMEOUT, f"no complete response within {self._timeout_s} s"
        if connects and self.on_connect is not None:
            for connect_ns in connects:
                self.on_connect(connect_ns, warmup)
        server = state.server or (None, None, None)
        if state.completion_tokens is not None:
            tokens, source = state.completion_tokens, TokenSource.USAGE
        else:
            tokens, source = len(state.token_ns), TokenSource.EVENTS
        return RequestRecord(
            index=index,
            warmup=warmup,
            due_ns=sent_ns if due_ns is None else due_ns,
            sent_ns=sent_ns,
            end_ns=end_ns,
            token_ns=tuple(state.token_ns),
            output_tokens=tokens,
            counted_by=source,
            error=error,
            status=status,
            prompt_tokens=state.prompt_tokens,
            detail=self._redact(detail),
            server_prefill_us=server[0],
            server_decode_us=server[1],
            cached_tokens=server[2] if server[2] is not None else state.cached_tokens,
        )

    def _redact(self, text: str | None) -> str | None:
        if text is None:
            return None
        text = text[:_DETAIL_CHARS]
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        return text


def _raw(response: httpx.Response) -> httpx.AsyncByteStream:
    """The transport's own byte stream: what ``aiter_raw`` iterates, without its wrappers
    (re-chunking, byte counting, a context manager per read); ``aclose`` still releases it."""
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("the transport returned a sync stream")
    return stream


def _content_type(headers: list[tuple[bytes, bytes]]) -> str:
    """The Content-Type, or "" without one."""
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1")
    return ""


async def _read_error_body(stream: httpx.AsyncByteStream) -> str:
    """The start of an error body, for the report; the rest is not worth the wait."""
    got = b""
    async for data in stream:
        got += data
        if len(got) >= _ERROR_BODY_BYTES:
            break
    try:
        message = orjson.loads(got)["error"]["message"]
        if isinstance(message, str):
            return message
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
        pass
    return got[:_DETAIL_CHARS].decode("utf-8", "replace")
