"""The workload room: seeded lengths, prompts of an exact length, datasets, traces, sessions.

Pure parts by value and by property; the server's ``/tokenize`` against a real HTTP server
on 127.0.0.1 that answers the way llama.cpp and vLLM do.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbench.errors import ScenarioError
from loadbench.scenario.workload_model import (
    DatasetFormat,
    DatasetSpec,
    Dist,
    LengthDist,
    SessionSpec,
    SharedPrefixSpec,
    TraceSpec,
    WorkloadSpec,
)
from loadbench.workload import (
    ApproxTokenizer,
    Conversation,
    build_prompt,
    draw,
    draws,
    load_tokenizer_file,
    parse_dataset,
    parse_trace,
    prepare_workload,
    probe_server,
    schedule,
    shipped_corpus,
)

DATA = Path(__file__).resolve().parent.parent / "scenarios" / "data"
CORPUS = shipped_corpus()
tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def word_tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word-level tokenizer.json over the shipped corpus: every word and mark one token."""
    words = sorted(set(CORPUS.text.replace(".", " ").replace(",", " ").split()))
    vocab = {"[UNK]": 0} | {w: i + 1 for i, w in enumerate(words)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


# -- distributions ---------------------------------------------------------------------------

lengths = st.builds(
    lambda kind, a, b, mean, sd: (
        LengthDist.fixed(a)
        if kind == "fixed"
        else LengthDist(Dist(kind), min=min(a, b), max=max(a, b), mean=mean, stddev=sd)
    ),
    st.sampled_from(["fixed", "uniform", "normal"]),
    st.integers(1, 10_000),
    st.integers(1, 10_000),
    st.floats(1, 10_000),
    st.floats(0, 5_000),
)


@given(lengths, st.integers(-(2**63), 2**63 - 1))
@settings(max_examples=200, deadline=None)
def test_draws_are_seeded_and_in_bounds(dist: LengthDist, seed: int) -> None:
    got = draws(dist, 50, seed)
    assert got == draws(dist, 50, seed)
    if dist.dist is Dist.FIXED:
        assert set(got) == {dist.value}
    else:
        assert all(dist.min <= n <= dist.max for n in got)


def test_a_normal_draw_is_centred_on_its_mean() -> None:
    dist = LengthDist(Dist.NORMAL, min=1, max=4000, mean=1000, stddev=100)
    got = draws(dist, 2000, 7)
    assert 990 < sum(got) / len(got) < 1010
    assert draw(LengthDist(Dist.NORMAL, min=5, max=9, mean=7, stddev=0), random.Random(1)) == 7


@pytest.mark.parametrize(
    ("dist", "problem"),
    [
        (LengthDist(Dist.UNIFORM, min=9, max=3), "x: expected min <= max, got min 9 and max 3"),
        (
            LengthDist(Dist.NORMAL, min=1, max=9, mean=5, stddev=-1),
            "x.stddev: expected a number >= 0, got -1",
        ),
        (
            LengthDist(Dist.NORMAL, min=1, max=9, mean=20, stddev=1),
            "x.mean: expected a number from min 1 to max 9, got 20",
        ),
    ],
)
def test_impossible_parameters_are_problems(dist: LengthDist, problem: str) -> None:
    assert dist.problems("x") == [problem]


# -- tokenizers and prompts ------------------------------------------------------------------


@pytest.mark.parametrize("wanted", [1, 2, 7, 64, 500, 3000])
def test_prompts_have_exactly_the_tokens_asked_for(word_tokenizer_file: Path, wanted: int) -> None:
    tok, problem = load_tokenizer_file(word_tokenizer_file)
    assert problem is None
    assert tok is not None
    prompt = build_prompt(wanted, tok, random.Random(wanted), CORPUS)
    assert (prompt.tokens, prompt.exact) == (wanted, True)
    assert tok.count(prompt.text) == wanted
    assert build_prompt(wanted, tok, random.Random(wanted), CORPUS) == prompt


def test_the_approximation_is_close_and_says_so() -> None:
    tok = ApproxTokenizer()
    prompt = build_prompt(1000, tok, random.Random(3), CORPUS)
    assert not prompt.exact
    assert 990 <= prompt.tokens <= 1000
    assert abs(len(prompt.text.split()) * 1.3 - 1000) < 5
    assert "approx" in tok.name


def test_a_prompt_longer_than_the_corpus_wraps_round_it(word_tokenizer_file: Path) -> None:
    tok, _ = load_tokenizer_file(word_tokenizer_file)
    assert tok is not None
    small = type(CORPUS)("small", "one two three four five six seven eight nine ten " * 8)
    assert build_prompt(2000, tok, random.Random(0), small).tokens == 2000


def test_a_file_that_is_not_a_tokenizer_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"not": "a tokenizer"}')
    tok, problem = load_tokenizer_file(bad)
    assert tok is None
    assert problem is not None
    assert problem.startswith(f"cannot load {str(bad)!r} as a tokenizer.json: ")
    assert "\n" not in problem


class _Tokenize(BaseHTTPRequestHandler):
    flavour = "llama.cpp"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        words: list[str] | None = None
        if self.server.flavour == "llama.cpp" and "content" in body:  # type: ignore[attr-defined]
            words = body["content"].split()
            answer: dict[str, object] = {"tokens": list(range(len(words)))}
        elif self.server.flavour == "vllm" and "prompt" in body:  # type: ignore[attr-defined]
            words = body["prompt"].split()
            answer = {"count": len(words), "tokens": list(range(len(words)))}
        status = 200 if words is not None and self.path == "/tokenize" else 400
        data = json.dumps(answer if status == 200 else {"error": "bad"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=["llama.cpp", "vllm"])
def tokenize_server(request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Tokenize)
    server.flavour = request.param  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_the_servers_tokenize_is_probed_and_used(tokenize_server: str) -> None:
    with httpx.Client(timeout=5) as client:
        tok, note = probe_server(client, tokenize_server, "m")
        assert tok is not None, note
        assert tok.count("one two three") == 3
        prompt = build_prompt(40, tok, random.Random(1), CORPUS)
        assert (prompt.tokens, prompt.exact) == (40, True)


def test_no_tokenize_means_no_server_tokenizer() -> None:
    with httpx.Client(timeout=2) as client:
        tok, note = probe_server(client, "http://127.0.0.1:9/v1", "m")
    assert tok is None
    assert note.startswith("http://127.0.0.1:9/tokenize: ")


# -- datasets --------------------------------------------------------------------------------


def test_the_shipped_datasets_parse() -> None:
    text = (DATA / "sample-sharegpt.json").read_text()
    entries, problems = parse_dataset(text, DatasetFormat.SHAREGPT, "f")
    assert problems == []
    assert len(entries) == 20
    assert entries[0].prompt.startswith("What is the difference between a process")
    assert entries[0].output_text is not None
    assert entries[0].line == 2
    rows, problems = parse_dataset((DATA / "sample.jsonl").read_text(), DatasetFormat.JSONL, "f")
    assert problems == []
    assert len(rows) == 12
    assert (rows[0].output_tokens, rows[2].output_tokens) == (32, None)


def test_bad_dataset_lines_are_named_by_number() -> None:
    text = '{"prompt": "ok"}\n\nnot json\n{"prompt": ""}\n{"prompt": "x", "output_tokens": 0}\n'
    _, problems = parse_dataset(text, DatasetFormat.JSONL, "d")
    assert problems == [
        "d line 3: invalid JSON: Expecting value",
        "d line 4: prompt: expected a non-empty string, got ''",
        "d line 5: output_tokens: expected a positive integer, got 0",
    ]
    sharegpt = '[\n {"conversations": [{"from": "human", "value": "hi"}]},\n {"x": 1}\n]'
    entries, problems = parse_dataset(sharegpt, DatasetFormat.SHAREGPT, "s")
    assert len(entries) == 1
    assert problems == ["s line 3: expected an object with a conversations list, got {'x': 1}"]
    assert parse_dataset("\n\n", DatasetFormat.TEXT, "t")[1] == [
        "t: expected at least one prompt, got none"
    ]


def _spec(**changes: object) -> WorkloadSpec:
    base: dict[str, object] = {"folder": str(DATA), "tokenizer": "approx"}
    return WorkloadSpec(**(base | changes))  # type: ignore[arg-type]


def test_the_same_file_and_seed_yield_the_same_requests() -> None:
    spec = _spec(dataset=DatasetSpec("sample-sharegpt.json", DatasetFormat.SHAREGPT, sample=8))
    one = prepare_workload(spec, scenario_path="s.toml", default_max_tokens=64).items(20)
    two = prepare_workload(spec, scenario_path="s.toml", default_max_tokens=64).items(20)
    assert one == two
    assert len({i.user for i in one}) == 8  # a sample of 8, cycled
    other = _spec(
        dataset=DatasetSpec("sample-sharegpt.json", DatasetFormat.SHAREGPT, sample=8), seed=1
    )
    assert prepare_workload(other, scenario_path="s.toml", default_max_tokens=64).items(20) != one


def test_length_filters_apply_and_an_empty_result_is_refused() -> None:
    spec = _spec(dataset=DatasetSpec("sample.jsonl", DatasetFormat.JSONL, max_input_tokens=10))
    items = prepare_workload(spec, scenario_path="s.toml", default_max_tokens=64).items(12)
    assert all(i.input_tokens_counted is not None and i.input_tokens_counted <= 10 for i in items)
    spec = _spec(dataset=DatasetSpec("sample.jsonl", DatasetFormat.JSONL, max_input_tokens=1))
    with pytest.raises(ScenarioError, match="to pass the length filters, got none"):
        prepare_workload(spec, scenario_path="s.toml", default_max_tokens=64)


# -- traces ----------------------------------------------------------------------------------


def test_the_shipped_trace_parses_and_schedules() -> None:
    trace, problems = parse_trace((DATA / "sample-trace.jsonl").read_text(), "t")
    assert problems == []
    assert 180 <= len(trace) <= 260
    due = schedule(trace, 2.0)
    assert due[0] == 0
    assert list(due) == sorted(due)
    assert 25e9 < due[-1] < 31e9  # ~60 s recorded, replayed at 2x
    assert schedule(trace, 1.0)[5] == round((trace[5].timestamp_ms - trace[0].timestamp_ms) * 1e6)


def test_bad_trace_lines_are_named_by_number() -> None:
    text = "\n".join(
        [
            '{"timestamp_ms": 100, "input_tokens": 10, "output_tokens": 5}',
            '{"timestamp_ms": 50, "input_tokens": 10, "output_tokens": 5}',
            '{"timestamp_ms": 200, "input_tokens": 10}',
            "{",
            '{"timestamp_ms": 300, "input_tokens": -1, "output_tokens": 5}',
        ]
    )
    _, problems = parse_trace(text, "t")
    assert problems == [
        "t line 2: timestamp_ms: expected 100 or later (line 1's), got 50: "
        "the lines must be in time order",
        "t line 3: missing output_tokens",
        "t line 4: invalid JSON: Expecting property name enclosed in double quotes",
        "t line 5: input_tokens: expected a positive integer, got -1",
    ]


def test_a_bad_trace_stops_the_workload_before_any_request(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"timestamp_ms": 1}\n')
    spec = _spec(folder=str(tmp_path), trace=TraceSpec("t.jsonl"))
    with pytest.raises(ScenarioError) as caught:
        prepare_workload(spec, scenario_path="s.toml", default_max_tokens=8)
    assert caught.value.problems == (
        "workload.trace.file: 't.jsonl' line 1: missing input_tokens, output_tokens",
    )
    assert caught.value.exit_code == 2


def test_trace_items_follow_the_trace_and_share_prefixes(word_tokenizer_file: Path) -> None:
    spec = _spec(
        trace=TraceSpec("sample-trace.jsonl", speedup=2.0), tokenizer=str(word_tokenizer_file)
    )
    work = prepare_workload(spec, scenario_path="s.toml", default_max_tokens=8)
    assert work.size == len(work.trace)
    items = work.items(work.size or 0)
    for item, entry in zip(items, work.trace, strict=True):
        assert item.max_tokens == entry.output_tokens
        assert item.input_tokens_counted == item.input_tokens_requested == entry.input_tokens
    by_first = {}
    for item, entry in zip(items, work.trace, strict=True):
        if len(entry.hash_ids) > 1:
            by_first.setdefault(entry.hash_ids[0], []).append(item.user[:200])
    shared = [texts for texts in by_first.values() if len(texts) > 1]
    assert shared
    assert all(len(set(texts)) == 1 for texts in shared)
    with pytest.raises(IndexError):
        work.item(work.size or 0)


# -- synthetic, sessions, shared prefixes ----------------------------------------------------


def test_synthetic_items_hit_their_lengths(word_tokenizer_file: Path) -> None:
    spec = _spec(
        input_tokens=LengthDist(Dist.UNIFORM, min=100, max=300),
        output_tokens=LengthDist.fixed(32),
        tokenizer=str(word_tokenizer_file),
        ignore_eos=True,
    )
    work = prepare_workload(spec, scenario_path="s.toml", default_max_tokens=8)
    items = work.items(20)
    assert all(i.input_tokens_counted == i.input_tokens_requested for i in items)
    assert all(100 <= (i.input_tokens_requested or 0) <= 300 for i in items)
    assert items[3] == work.item(3)  # by index, in any order
    assert items[0].body_fields() == {"max_tokens": 32, "ignore_eos": True, "min_tokens": 32}
    assert not work.approximate
    assert "tokenizer.json" in work.tokenizer_note


def test_session_turns_carry_the_history() -> None:
    spec = _spec(
        input_tokens=LengthDist.fixed(20),
        sessions=SessionSpec(turns=3, think_time_s=1.5),
        shared_prefix=SharedPrefixSpec(groups=2, prefix_tokens=50),
    )
    work = prepare_workload(spec, scenario_path="s.toml", default_max_tokens=8)
    first, second, third, other = work.items(4)
    assert [i.turn for i in (first, second, third, other)] == [1, 2, 3, 1]
    assert [i.think_time_s for i in (first, second, third)] == [0.0, 1.5, 1.5]
    assert first.session_id == second.session_id == "s0"
    assert other.session_id == "s1"
    assert first.system == third.system != other.system
    talk = Conversation("s0", first.system)
    assert [m.role for m in first.messages(talk)] == ["system", "user"]
    talk = talk.after(first.user, "answer one").after(second.user, "answer two")
    messages = third.messages(talk)
    assert [m.role for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert [m.content for m in messages[1:]] == [
        first.user,
        "answer one",
        second.user,
        "answer two",
        third.user,
    ]


def test_server_tokenizer_that_is_required_but_absent_is_refused() -> None:
    spec = _spec(input_tokens=LengthDist.fixed(20), tokenizer="server")
    with httpx.Client(timeout=2) as client, pytest.raises(ScenarioError) as caught:
        prepare_workload(
            spec,
            scenario_path="s.toml",
            default_max_tokens=8,
            base_url="http://127.0.0.1:9/v1",
            client=client,
        )
    (problem,) = caught.value.problems
    assert problem.startswith("workload.tokenizer: expected a server that answers POST /tokenize")
