"""EventReader: its one-step path for a read holding exactly one chunk and one event must
agree with BodyDecoder + SSEDecoder, the general path, on any stream cut in any way."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadbench.http.events import EventReader
from loadbench.http.h1 import BodyDecoder, Framing, FramingError
from loadbench.http.sse import SSEDecoder

# Events as servers send them: the common shape first (the fast path's), then the others.
EVENT = st.one_of(
    st.builds(lambda p: b"data: " + p + b"\n\n", st.sampled_from([b'{"a":1}', b"[DONE]", b"x"])),
    st.builds(lambda p: b"data: " + p + b"\r\n\r\n", st.sampled_from([b'{"a":2}', b"y"])),
    st.just(b": keep-alive\n\n"),
    st.just(b"data: one\ndata: two\n\n"),
    st.just(b"data:nospace\n\n"),
    st.just(b"event: ping\ndata: {}\n\n"),
    st.just(b"data: \n\n"),
    st.just(b"data: a\rb\n\n"),
    st.binary(max_size=12),  # anything at all, even half an event
)
SIZE_LINE = st.sampled_from([b"%x", b"%X", b"00%x", b"%x;ext=1", b"%x "])


def chunked(chunks: list[bytes], size_lines: list[bytes]) -> tuple[bytes, list[int]]:
    """The wire bytes of a chunked body and the offsets where its chunks start."""
    wire, starts = b"", []
    for i, data in enumerate(chunks):
        starts.append(len(wire))
        line = size_lines[i % len(size_lines)] % len(data)
        wire += line + b"\r\n" + data + b"\r\n"
    starts.append(len(wire))
    return wire + b"0\r\n\r\n", starts


def general(wire: bytes) -> tuple[list[bytes], bool, bool]:
    """The reference: the whole body through BodyDecoder, then SSEDecoder."""
    decoder, sse = BodyDecoder(Framing.CHUNKED), SSEDecoder()
    payloads = sse.feed(b"".join(decoder.feed(wire)))
    return payloads, sse.close(), decoder.done


def by_reader(reads: list[bytes]) -> tuple[list[bytes], bool, bool, list[int]]:
    got: list[bytes] = []
    stamps: list[int] = []
    decoder = BodyDecoder(Framing.CHUNKED)

    def feed(payload: bytes, now: int) -> None:
        got.append(payload)
        stamps.append(now)

    reader = EventReader(feed, decoder)
    done = False
    for data in reads:
        assert not done, "read after the body was complete"
        done = reader.read(data)
        assert reader.failure is None
    return got, reader.close(), done and decoder.done, stamps


def cut(wire: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted({min(p, len(wire)) for p in points}), len(wire)]
    return [wire[a:b] for a, b in pairwise(bounds) if b > a]


@given(
    events=st.lists(EVENT, min_size=1, max_size=12),
    size_lines=st.lists(SIZE_LINE, min_size=1, max_size=3),
    per_chunk=st.integers(1, 3),
    crlf_ahead=st.booleans(),
)
def test_reads_of_one_chunk_each_agree_with_the_general_path(
    events: list[bytes], size_lines: list[bytes], per_chunk: int, crlf_ahead: bool
) -> None:
    """Reads that hold one chunk each, as a token-paced server's do: the fast path. With
    ``crlf_ahead`` each read ends before its chunk's closing CRLF, which comes at the start
    of the next one, as Foundry Local's oatpp server writes them."""
    chunks = [b"".join(events[i : i + per_chunk]) for i in range(0, len(events), per_chunk)]
    chunks = [c for c in chunks if c]
    wire, starts = chunked(chunks, size_lines)
    points = [s - 2 for s in starts[1:]] if crlf_ahead else starts
    want = general(wire)
    got = by_reader(cut(wire, points))
    assert got[:3] == want


@given(
    events=st.lists(EVENT, min_size=1, max_size=12),
    size_lines=st.lists(SIZE_LINE, min_size=1, max_size=3),
    points=st.lists(st.integers(0, 600), max_size=12),
)
def test_reads_cut_anywhere_agree_with_the_general_path(
    events: list[bytes], size_lines: list[bytes], points: list[int]
) -> None:
    wire, _ = chunked([e for e in events if e], size_lines)
    assert by_reader(cut(wire, points))[:3] == general(wire)


@pytest.mark.parametrize("crlf_ahead", [False, True])
def test_a_read_of_one_whole_event_chunk_skips_the_decoders(crlf_ahead: bool) -> None:
    """The point of the module: after the first event, a read holding one chunk and one
    event reaches the stream state without a call into either decoder; also when each
    chunk's closing CRLF arrives at the start of the next read (oatpp)."""

    class Counting(BodyDecoder):
        calls = 0

        def feed(self, data: bytes) -> list[bytes]:
            Counting.calls += 1
            return super().feed(data)

    got: list[bytes] = []
    reader = EventReader(lambda payload, now: got.append(payload), Counting(Framing.CHUNKED))
    event = b'data: {"choices":[]}\n\n'
    first = chunk = b"%x\r\n%s\r\n" % (len(event), event)
    if crlf_ahead:
        first, chunk = first[:-2], b"\r\n" + first[:-2]
    assert not reader.read(first)  # the first one decides the BOM: general path
    for _ in range(5):
        assert not reader.read(chunk)
    assert reader.read(b"\r\n0\r\n\r\n" if crlf_ahead else b"0\r\n\r\n")
    assert got == [b'{"choices":[]}'] * 6
    assert Counting.calls == 2  # the first read and the last


def test_a_size_line_alone_then_its_data_is_not_mistaken_for_a_chunk() -> None:
    """A read that ends after a size line leaves the decoder mid-chunk: the next read is
    chunk data, even when it has the shape of a whole small chunk."""

    fed: list[bytes] = []

    class Counting(BodyDecoder):
        def feed(self, data: bytes) -> list[bytes]:
            fed.append(data)
            return super().feed(data)

    got: list[bytes] = []
    reader = EventReader(lambda payload, now: got.append(payload), Counting(Framing.CHUNKED))
    reader.read(b"9\r\ndata: a\n\n\r\n")
    inner = b"9\r\ndata: b\n\n\r\n"  # 14 bytes of chunk data shaped like a chunk
    reader.read(b"%x\r\n" % len(inner))
    reader.read(inner)
    reader.read(b"\r\n")
    assert reader.read(b"0\r\n\r\n")
    assert inner in fed  # framed by the decoder, not sliced as a chunk
    wire = b"9\r\ndata: a\n\n\r\n" + b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n"
    assert (got, reader.close()) == general(wire)[:2]


def test_a_framing_error_is_kept_not_raised() -> None:
    reader = EventReader(lambda payload, now: None, BodyDecoder(Framing.CHUNKED))
    assert reader.read(b"zz\r\n")
    assert isinstance(reader.failure, FramingError)


@pytest.mark.parametrize("warm", [False, True])
def test_a_fault_in_feed_is_kept_not_raised(warm: bool) -> None:
    """Cold: the first event fails on the general path; warm: the second, on the fast one."""

    def feed(payload: bytes, now: int) -> None:
        if payload == (b"b" if warm else b"a"):
            raise RuntimeError("bug")

    reader = EventReader(feed, BodyDecoder(Framing.CHUNKED))
    assert reader.read(b"9\r\ndata: a\n\n\r\n") is not warm
    if warm:
        assert reader.read(b"9\r\ndata: b\n\n\r\n")
    assert isinstance(reader.failure, RuntimeError)


def test_body_bytes_without_a_decoder() -> None:
    """A TLS or httpx body comes already de-framed: ``body`` only."""
    got: list[bytes] = []
    reader = EventReader(lambda payload, now: got.append(payload))
    reader.body(b"data: a\n\nda")
    reader.body(b"ta: b\n\n")
    assert got == [b"a", b"b"]
    assert not reader.close()
