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


# -- a wrongly framed chunked body is an error, never a silently different body -----------

# Chunk data without CR or LF, so a mis-sized chunk cannot line up with a CRLF by accident.
PLAIN = st.binary(min_size=1, max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b)


def decode_all(wire: bytes, cuts: list[int]) -> tuple[bytes, bool]:
    """The body and whether it was complete at EOF; raises FramingError."""
    decoder = BodyDecoder(Framing.CHUNKED)
    body = b"".join(b"".join(decoder.feed(part)) for part in split_at(wire, cuts))
    return body, decoder.eof()


@given(
    pieces=st.lists(PLAIN.filter(lambda b: len(b) >= 2), min_size=1, max_size=6),
    which=st.integers(min_value=0),
    short_by=st.integers(min_value=1, max_value=60),
    cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=8),
)
def test_a_chunk_longer_than_its_size_is_a_framing_error(
    pieces: list[bytes], which: int, short_by: int, cuts: list[int]
) -> None:
    i = which % len(pieces)
    size = max(len(pieces[i]) - short_by, 1)  # 0 would be the last chunk, not a short one
    wire = b"".join(
        b"%x\r\n" % (size if j == i else len(p)) + p + b"\r\n" for j, p in enumerate(pieces)
    )
    with pytest.raises(FramingError, match="does not end where its size line says"):
        decode_all(wire + b"0\r\n\r\n", cuts)


@given(
    pieces=st.lists(PLAIN, min_size=1, max_size=6),
    long_by=st.integers(min_value=1, max_value=80),
    trailers=st.lists(st.sampled_from([b"X-Trailer: 1", b"Y: z"]), max_size=2),
    cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=8),
)
def test_a_last_chunk_shorter_than_its_size_never_completes(
    pieces: list[bytes], long_by: int, trailers: list[bytes], cuts: list[int]
) -> None:
    """Declared too long, the last chunk eats the framing after it: either that framing is
    not where a CRLF must be (an error) or the body never ends (incomplete at EOF)."""
    *head, last = pieces
    wire = chunked(head, [], b"") if head else b""
    wire = wire.removesuffix(b"0\r\n\r\n")
    wire += b"%x\r\n" % (len(last) + long_by) + last + b"\r\n0\r\n"
    wire += b"".join(t + b"\r\n" for t in trailers) + b"\r\n"
    try:
        _body, complete = decode_all(wire, cuts)
    except FramingError:
        return
    assert not complete


def test_the_issue_example_is_an_error_not_hell() -> None:
    with pytest.raises(FramingError):
        BodyDecoder(Framing.CHUNKED).feed(b"4\r\nhello\r\n0\r\n\r\n")


@given(
    size=st.integers(min_value=1, max_value=0xFFFF),
    mangle=st.sampled_from(["0x{}", "0X{}", "+{}", "-{}", " {}", "\t{}", "_{}", "{}_0", "{}\v"]),
    cuts=st.lists(st.integers(min_value=0, max_value=100), max_size=4),
)
def test_a_size_line_is_hex_digits_only(size: int, mangle: str, cuts: list[int]) -> None:
    """What ``int(x, 16)`` would accept beyond hex digits is a framing error."""
    line = mangle.format(f"{size:x}").encode()
    wire = line + b"\r\n" + b"x" * size + b"\r\n0\r\n\r\n"
    with pytest.raises(FramingError):
        decode_all(wire, cuts)


@pytest.mark.parametrize("line", [b"1a", b"1A", b"001a", b"1a ", b"1a\t;x=1", b"1a;x", b"1a ; x"])
def test_size_lines_that_stay_valid(line: bytes) -> None:
    assert decode_all(line + b"\r\n" + b"y" * 26 + b"\r\n0\r\n\r\n", []) == (b"y" * 26, True)
