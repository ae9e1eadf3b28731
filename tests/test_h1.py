"""HTTP/1.1 response framing, by value and by property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadbench.http.h1 import BodyDecoder, Framing, FramingError, parse_head


def test_parse_head_chunked_keep_alive() -> None:
    head = parse_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked"
    )
    assert head.status == 200
    assert head.reason == b"OK"
    assert head.framing is Framing.CHUNKED
    assert head.keep_alive
    assert (b"Content-Type", b"text/event-stream") in head.headers


def test_parse_head_length_and_close() -> None:
    head = parse_head(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 12\r\nConnection: close")
    assert head.status == 429
    assert head.framing is Framing.LENGTH
    assert head.content_length == 12
    assert not head.keep_alive


def test_parse_head_without_length_reads_to_close() -> None:
    head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream")
    assert head.framing is Framing.CLOSE
    assert not head.keep_alive


def test_http10_closes_by_default() -> None:
    assert not parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0").keep_alive


@pytest.mark.parametrize(
    "block",
    [
        b"garbage",
        b"HTTP/1.1 abc OK",
        b"HTTP/1.1 200 OK\r\nno colon here",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1",
        b"SSH-2.0-OpenSSH",
    ],
)
def test_parse_head_rejects_garbage(block: bytes) -> None:
    with pytest.raises(FramingError):
        parse_head(block)


def test_no_body_for_204() -> None:
    head = parse_head(b"HTTP/1.1 204 No Content")
    assert BodyDecoder(head.framing, head.content_length).done


def chunked(pieces: list[bytes], trailers: list[bytes], ext: bytes = b";ext=1") -> bytes:
    out = b"".join(b"%x%s\r\n" % (len(p), ext) + p + b"\r\n" for p in pieces if p)
    return out + b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    parts, last = [], 0
    for p in points:
        parts.append(data[last:p])
        last = p
    parts.append(data[last:])
    return parts


@given(
    pieces=st.lists(st.binary(max_size=300), max_size=12),
    trailers=st.lists(st.sampled_from([b"X-Trailer: 1", b"Y: z"]), max_size=2),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    ext=st.sampled_from([b"", b";ext=1", b" "]),
)
def test_chunked_body_survives_any_split(
    pieces: list[bytes], trailers: list[bytes], cuts: list[int], ext: bytes
) -> None:
    wire = chunked(pieces, trailers, ext)
    decoder = BodyDecoder(Framing.CHUNKED)
    body = b"".join(b"".join(decoder.feed(part)) for part in split_at(wire, cuts))
    assert body == b"".join(pieces)
    assert decoder.done


@given(body=st.binary(max_size=500), cuts=st.lists(st.integers(0, 1000), max_size=10))
def test_content_length_body_stops_at_length(body: bytes, cuts: list[int]) -> None:
    decoder = BodyDecoder(Framing.LENGTH, len(body))
    got = b"".join(b"".join(decoder.feed(p)) for p in split_at(body + b"EXTRA", cuts))
    assert got == body
    assert decoder.done


def test_truncated_chunked_body_is_not_done() -> None:
    decoder = BodyDecoder(Framing.CHUNKED)
    decoder.feed(b"10\r\nonly part")
    assert not decoder.eof()


@pytest.mark.parametrize("line", [b"zz", b"", b"-5", b"zz;ext=1", b";ext"])
def test_bad_chunk_size_is_a_framing_error(line: bytes) -> None:
    with pytest.raises(FramingError):
        BodyDecoder(Framing.CHUNKED).feed(line + b"\r\n")


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_framing_errors(data: bytes) -> None:
    decoder = BodyDecoder(Framing.CHUNKED)
    try:
        decoder.feed(data)
        decoder.eof()
    except FramingError:
        pass
