"""The SSE decoder, by example for each rule and by property against a reference reader.

The reference (`_reference`) reads a whole stream at once, the way the WHATWG spec words
it, with none of the decoder's shortcuts; the properties check that the incremental
decoder agrees with it under any split of the stream into chunks.
"""

from __future__ import annotations

import re
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from loadbench.http.sse import SSEDecoder

BOM = b"\xef\xbb\xbf"


def decode(*chunks: bytes) -> tuple[list[bytes], bool]:
    decoder = SSEDecoder()
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out, decoder.close()


def _reference(stream: bytes) -> tuple[list[bytes], bool]:
    """Payloads and whether an unfinished event was left over, straight from the spec."""
    if stream.startswith(BOM):
        stream = stream[3:]
    *lines, partial = re.split(rb"\r\n|\r|\n", stream)
    out: list[bytes] = []
    data: list[bytes] | None = None
    unfinished = False
    for line in lines:
        if not line:
            if data is not None:
                out.append(b"\n".join(data))
            data, unfinished = None, False
            continue
        unfinished = True
        if line.startswith(b":"):
            continue
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data = [*(data or []), value]
    return out, unfinished or bool(partial)


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(stream)) for c in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in pairwise(bounds)]


# --- examples, one rule at a time -------------------------------------------------------


def test_openai_stream_with_done() -> None:
    stream = b'data: {"a":1}\n\ndata: {"a":2}\n\ndata: [DONE]\n\n'
    assert decode(stream) == ([b'{"a":1}', b'{"a":2}', b"[DONE]"], False)


def test_each_line_end_dispatches_alone() -> None:
    for end in (b"\n", b"\r\n", b"\r"):
        assert decode(b"data: x" + end + end) == ([b"x"], False)


def test_mixed_line_ends_in_one_stream() -> None:
    assert decode(b"data: a\r\ndata: b\rdata: c\n\r\n") == ([b"a\nb\nc"], False)


def test_cr_at_chunk_end_and_lf_at_next_start_are_one_line_end() -> None:
    # Two line ends would make a blank line and dispatch "a" alone.
    assert decode(b"data: a\r", b"\ndata: b\r\n\r\n") == ([b"a\nb"], False)


def test_cr_ending_a_chunk_dispatches_without_waiting_for_more() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == [b"a"]
    assert decoder.feed(b"\n") == []  # the second half of a CRLF: no second dispatch
    assert decoder.close() is False


def test_only_cr_and_lf_end_lines() -> None:
    # U+2028, U+2029, U+0085 (NEL), form feed, vertical tab, file/group/record separators:
    # all line ends for str.splitlines, none for SSE.
    odd = "\u2028\u2029\u0085".encode() + b"\x0c\x0b\x1c\x1d\x1e\x85"
    payload = b'{"text":"' + odd + b'"}'
    assert decode(b"data: " + payload + b"\n\n") == ([payload], False)


def test_data_lines_join_with_lf() -> None:
    assert decode(b"data: a\ndata:  b\ndata:c\n\n") == ([b"a\n b\nc"], False)


def test_one_leading_space_is_removed_only_after_the_colon() -> None:
    assert decode(b"data:x\n\ndata: x\n\ndata:  x\n\n") == ([b"x", b"x", b" x"], False)


def test_colons_in_the_value_are_kept() -> None:
    assert decode(b"data: a: b:c\n\n") == ([b"a: b:c"], False)


def test_empty_data_values_dispatch_empty_payloads() -> None:
    assert decode(b"data:\n\ndata: \n\ndata\n\n") == ([b"", b"", b""], False)
    assert decode(b"data\ndata\n\n") == ([b"\n"], False)


def test_comments_and_other_fields_are_ignored() -> None:
    stream = (
        b": keep-alive\n"
        b"event: message\n"
        b"id: 7\n"
        b"retry: 1000\n"
        b"dataset: no\n"
        b"Data: no\n"
        b"data : no\n"
        b"whatever\n"
        b"data: yes\n\n"
    )
    assert decode(stream) == ([b"yes"], False)


def test_an_event_without_data_dispatches_nothing() -> None:
    assert decode(b"event: ping\n\n: comment\n\nid: 1\n\n\n\ndata: x\n\n") == ([b"x"], False)


def test_a_leading_bom_is_ignored_even_when_split() -> None:
    assert decode(BOM + b"data: x\n\n") == ([b"x"], False)
    assert decode(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == ([b"x"], False)
    assert decode(b"", b"\xef\xbb", b"\xbfdata: x\n\n") == ([b"x"], False)


def test_a_bom_anywhere_else_is_data() -> None:
    # A second BOM at the start makes the first field name "\ufeffdata": not a data field.
    assert decode(BOM + BOM + b"data: x\n\n") == ([], False)
    assert decode(b"data: x\n\n" + BOM + b"data: y\n\n") == ([b"x"], False)
    assert decode(b"data: " + BOM + b"\n\n") == ([BOM], False)


def test_a_partial_bom_alone_is_a_leftover() -> None:
    assert decode(b"\xef\xbb") == ([], True)
    assert decode(BOM) == ([], False)


def test_events_spread_over_many_chunks() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\n'
    assert decode(*[stream[i : i + 1] for i in range(len(stream))]) == (
        [b'{"a":1}', b'{"b":2}'],
        False,
    )


def test_several_events_in_one_chunk_and_a_partial_one() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n\ndata: 2\n\ndata: 3") == [b"1", b"2"]
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [b"3"]


def test_close_reports_unfinished_events() -> None:
    assert decode(b"data: x\n\n")[1] is False
    assert decode(b"data: x\n\n\n\n")[1] is False  # extra blank lines are complete
    assert decode(b"data: x\r\n\r\n\r")[1] is False  # a trailing CR ends a (blank) line
    assert decode(b"data: x\n\ndata: y")[1] is True  # a partial line
    assert decode(b"data: x\n\ndata: y\n")[1] is True  # a complete line, never dispatched
    assert decode(b"data: x\n\n: ping\n")[1] is True  # comments belong to events too
    assert decode(b"")[1] is False


def test_close_resets_the_decoder() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a") == []
    assert decoder.close() is True
    assert decoder.feed(BOM + b"data: b\n\n") == [b"b"]
    assert decoder.close() is False


# --- properties ---------------------------------------------------------------------

_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])
# Values are any bytes but CR and LF, with the troublemakers made likely.
_VALUE = st.lists(
    st.one_of(
        st.binary(max_size=6),
        st.sampled_from(
            [b":", b" ", b"  ", "\u2028".encode(), "\u0085".encode(), b"\x0c", BOM, b"data:"]
        ),
    ),
    max_size=5,
).map(lambda parts: b"".join(parts).replace(b"\r", b"").replace(b"\n", b""))
_NOISE = st.one_of(
    _VALUE.map(lambda v: b":" + v),
    _VALUE.map(lambda v: b"event:" + v),
    _VALUE.map(lambda v: b"id: " + v),
)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bytes, list[bytes], bool]:
    """A rendered stream, the payloads it holds, and whether it ends mid-event."""
    events = draw(st.lists(st.lists(_VALUE, min_size=1, max_size=3), max_size=6))
    out = bytearray(draw(st.sampled_from([b"", BOM])))
    for lines in events:
        for value in lines:
            for noise in draw(st.lists(_NOISE, max_size=1)):
                out += noise + draw(_ENDS)
            spaced = value.startswith(b" ") or draw(st.booleans())
            out += (b"data: " if spaced else b"data:") + value + draw(_ENDS)
        for _ in range(draw(st.integers(1, 2))):  # a second blank line dispatches nothing
            end = draw(_ENDS)
            # A blank line after a CR must not start with LF: CR LF would be one line end.
            out += b"\r\n" if end == b"\n" and out.endswith(b"\r") else end
    tail = draw(st.sampled_from([b"", b"data: partial", b"data: done\n", b": c\r\n"]))
    return bytes(out + tail), [b"\n".join(lines) for lines in events], bool(tail)


_CUTS = st.lists(st.integers(min_value=0, max_value=4000), max_size=12)


@given(_streams(), _CUTS)
def test_rendered_events_come_back_under_any_split(
    rendered: tuple[bytes, list[bytes], bool], cuts: list[int]
) -> None:
    stream, payloads, unfinished = rendered
    assert decode(*_split(stream, cuts)) == (payloads, unfinished)


@given(_streams(), st.data())
def test_splits_between_cr_and_lf(
    rendered: tuple[bytes, list[bytes], bool], data: st.DataObject
) -> None:
    stream, payloads, unfinished = rendered
    crlf = [m.start() + 1 for m in re.finditer(rb"\r\n", stream)]
    cuts = data.draw(st.lists(st.sampled_from(crlf), unique=True)) if crlf else []
    assert decode(*_split(stream, cuts)) == (payloads, unfinished)


# Streams built from the bytes that matter to the grammar, so they hit every rule often.
_GRAMMAR = st.lists(
    st.sampled_from(
        [b"\r", b"\n", b"\r\n", b":", b" ", b"data", b"data: ", b"d", b"x", b"event", BOM, b"\xef"]
    ),
    max_size=40,
).map(b"".join)


@given(_GRAMMAR, _CUTS)
def test_matches_the_reference_reader_under_any_split(stream: bytes, cuts: list[int]) -> None:
    expected = _reference(stream)
    assert decode(stream) == expected
    assert decode(*_split(stream, cuts)) == expected


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_never_raise_and_match_the_reference(chunks: list[bytes]) -> None:
    assert decode(*chunks) == _reference(b"".join(chunks))
