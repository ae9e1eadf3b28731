"""Scenario files: what loads, what every mistake reads like, and that nothing else escapes."""

from __future__ import annotations

import dataclasses
import json
import math
import string
import tomllib
from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadbench.errors import LoadbenchError, ScenarioError, UsageError
from loadbench.scenario import apply_overrides, load_scenario, parse_float_list, parse_int_list
from loadbench.scenario.model import BASE_URL_ENV, Api, Arrival, LoadMode, Scenario, SimulateSpec

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").glob("*.toml"))

MINIMAL = """\
[target]
base_url = "http://127.0.0.1:8000/v1"
[[models]]
name = "m"
[prompts]
items = ["hello"]
[load]
concurrency = [1]
requests = 4
"""

FULL = """\
name = "full.example_1"
[target]
base_url = "https://llm.example.com/v1"
api = "completions"
api_key_env = "OPENAI_API_KEY"
timeout_s = 30
[[models]]
name = "model-a"
[[models]]
name = "model-b"
[prompts]
file = "prompts.jsonl"
[request]
max_tokens = 64
temperature = 0.7
stream = false
extra = { ignore_eos = true, top_p = 0.9, stop = ["\\n\\n"], logit_bias = { "50256" = -100 } }
[load]
rate = [2.0, 8]
arrival = "gamma"
burstiness = 0.5
max_concurrency = 64
duration_s = 30
warmup = 3
seed = 42
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text), env=env or {})
    return info.value.problems


# -- what loads ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_shipped_scenarios_load(path: Path) -> None:
    s = load_scenario(path, env={})
    assert s.name == path.stem
    assert s.models
    assert s.prompts or s.workload is not None
    json.dumps(s.to_dict())


def test_shipped_scenarios_are_the_ones_promised() -> None:
    assert [p.name for p in SCENARIOS] == [
        "demo.toml",
        "foundry-local-sim.toml",
        "foundry-local.toml",
        "llama-cpp-cold.toml",
        "llama-cpp.toml",
        "poisson.toml",
        "search.toml",
        "workload-dataset.toml",
        "workload-lengths.toml",
        "workload-sessions.toml",
        "workload-trace.toml",
    ]


def test_demo_sweeps_past_the_simulators_slots() -> None:
    s = load_scenario(SCENARIOS[0], env={})
    assert s.target.simulate is not None
    assert s.target.simulate.slots == 8
    assert s.load.concurrency == (1, 2, 4, 8, 16, 32)
    assert s.load.requests is not None
    assert s.load.requests >= max(s.load.concurrency)  # the c=32 stage is really filled


def test_minimal_defaults(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, MINIMAL), env={})
    assert s.name == "s"  # the file's stem when name is left out
    assert s.target.api is Api.CHAT
    assert s.target.api_key_env is None
    assert s.target.timeout_s == 120.0
    assert s.request.max_tokens == 128
    assert s.request.temperature is None
    assert s.request.stream is True
    assert dict(s.request.extra) == {}
    assert s.load.mode is LoadMode.CONCURRENCY
    assert s.load.rate == ()
    assert s.load.arrival is Arrival.CONSTANT
    assert s.load.burstiness == 1.0
    assert (s.load.warmup, s.load.seed, s.load.max_concurrency) == (0, 0, None)


def test_full_example_round_trips_to_dict(tmp_path: Path) -> None:
    (tmp_path / "prompts.jsonl").write_text('"one"\n{"prompt": "two", "id": 2}\n')
    path = write(tmp_path, FULL)
    s = load_scenario(path, env={})
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d == {
        "name": "full.example_1",
        "path": str(path),
        "target": {
            "base_url": "https://llm.example.com/v1",
            "api": "completions",
            "api_key_env": "OPENAI_API_KEY",
            "timeout_s": 30.0,
            "simulate": None,
            "metrics_url": None,
            "launch": None,
        },
        "models": ["model-a", "model-b"],
        "prompts": ["one", "two"],
        "prompts_file": "prompts.jsonl",
        "request": {
            "max_tokens": 64,
            "temperature": 0.7,
            "stream": False,
            "extra": {
                "ignore_eos": True,
                "top_p": 0.9,
                "stop": ["\n\n"],
                "logit_bias": {"50256": -100},
            },
        },
        "load": {
            "mode": "rate",
            "concurrency": [],
            "rate": [2.0, 8.0],
            "arrival": "gamma",
            "burstiness": 0.5,
            "max_concurrency": 64,
            "requests": None,
            "duration_s": 30.0,
            "warmup": 3,
            "seed": 42,
            "max_error_rate": None,
            "max_duration_s": None,
        },
        "slo": [],
        "monitor": {"interval_s": 0.5},
    }


def test_slo_table_becomes_thresholds(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + """
[slo]
ttft_ms = { p95 = 500 }
itl_ms = { p99 = 100 }
error_rate = 0.01
"""
    )
    s = load_scenario(write(tmp_path, text), env={})
    assert [t.source for t in s.slo] == ["ttft.p95<=500ms", "itl.p99<=100ms", "error_rate<=0.01"]
    assert s.to_dict()["slo"] == [t.source for t in s.slo]


def test_slo_mistakes_are_listed_with_the_rest(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace("requests = ", "requests = -")
        + """
[slo]
ttf_ms = { p95 = 500 }
e2e_ms = { p95 = -1 }
"""
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(write(tmp_path, text), env={})
    problems = "\n".join(caught.value.problems)
    assert "slo: unknown key 'ttf_ms' (did you mean 'ttft_ms'?)" in problems
    assert "slo.e2e_ms.p95: expected a positive number, got -1" in problems
    assert "load.requests" in problems


def test_simulate_is_resolved_and_serialised(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'base_url = "http://127.0.0.1:8000/v1"',
        "[target.simulate]\nttft_ms = 50\nslots = 4\nseed = 3\nerror_rate = 0.1",
    )
    s = load_scenario(write(tmp_path, text), env={})
    assert s.target.base_url is None
    assert s.target.simulate == SimulateSpec(ttft_ms=50.0, slots=4, seed=3, error_rate=0.1)
    simulate = s.to_dict()["target"]["simulate"]  # type: ignore[index]
    assert simulate["ttft_ms"] == 50.0
    assert simulate["seed"] == 3


def test_scenario_is_frozen(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, MINIMAL), env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.request.extra["x"] = 1  # type: ignore[index]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_scenario(path, env={}).models == ("m",)


def test_models_as_plain_strings(tmp_path: Path) -> None:
    text = 'models = ["a", "b"]\n' + MINIMAL.replace('[[models]]\nname = "m"\n', "")
    assert load_scenario(write(tmp_path, text), env={}).models == ("a", "b")


# -- every mistake, worded exactly --------------------------------------------------------


def edit(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new)


BAD = [
    (
        edit("concurrency = [1]", "rate = [2.0, -3]"),
        "load.rate[1]: expected a positive number, got -3",
    ),
    (
        edit('[[models]]\nname = "m"\n', ""),
        "models: expected at least one [[models]] entry with a name",
    ),
    (
        edit('base_url = "http://127.0.0.1:8000/v1"\n', ""),
        "target: expected base_url or [target.simulate]",
    ),
    (
        edit('items = ["hello"]', 'file = "x.json"'),
        "prompts.file: cannot read 'x.json': No such file or directory",
    ),
    (
        edit("concurrency = [1]", "concurency = [1]"),
        "load: unknown key 'concurency' (did you mean 'concurrency'?)",
    ),
    (
        edit("concurrency = [1]", "concurrency = [1]\nrate = [1.0]"),
        "load: expected exactly one of concurrency or rate",
    ),
    (
        edit("requests = 4", "requests = 4\nduration_s = 5"),
        "load: expected exactly one of requests or duration_s",
    ),
    (edit("requests = 4", ""), "load: expected exactly one of requests or duration_s"),
    (
        edit("requests = 4", "requests = true"),
        "load.requests: expected a positive integer, got true",
    ),
    (edit("requests = 4", "requests = 4.0"), "load.requests: expected a positive integer, got 4.0"),
    (
        edit("requests = 4", "requests = 2000000"),
        "load.requests: expected a positive integer up to 1000000, got 2000000",
    ),
    (
        edit("concurrency = [1]", "concurrency = [1, 0]"),
        "load.concurrency[1]: expected a positive integer, got 0",
    ),
    (
        edit("concurrency = [1]", "concurrency = []"),
        "load.concurrency: expected a non-empty list of positive integers, got []",
    ),
    (
        edit("concurrency = [1]", 'rate = ["fast"]'),
        "load.rate[0]: expected a positive number, got 'fast'",
    ),
    (
        edit("concurrency = [1]", "rate = [nan]"),
        "load.rate[0]: expected a positive number, got nan",
    ),
    (
        edit("concurrency = [1]", "rate = [0.0001]"),
        "load.rate[0]: expected a rate of at least 0.001 requests/s, got 0.0001",
    ),
    (
        edit("concurrency = [1]", 'rate = [1.0]\narrival = "bursty"'),
        "load.arrival: expected one of 'constant', 'poisson', 'gamma', got 'bursty'",
    ),
    (
        edit("concurrency = [1]", 'rate = [1.0]\narrival = "poisson"\nburstiness = 0.5'),
        "load.burstiness: expected arrival = 'gamma' with it, got arrival = 'poisson'",
    ),
    (
        edit("concurrency = [1]", 'rate = [1.0]\narrival = "gamma"\nburstiness = 0'),
        "load.burstiness: expected a number from 0.01 to 100, got 0",
    ),
    (
        edit("requests = 4", "requests = 4\nwarmup = -1"),
        "load.warmup: expected an integer >= 0, got -1",
    ),
    (
        edit("requests = 4", "requests = 4\nseed = 1e3"),
        "load.seed: expected a 64-bit integer, got 1000.0",
    ),
    (
        edit("requests = 4", f"requests = 4\nseed = {2**63}"),
        f"load.seed: expected a 64-bit integer, got {2**63}",
    ),
    (
        edit("requests = 4", "duration_s = 1000\nwarmup = 5").replace(
            "concurrency = [1]", "rate = [2000.0]"
        ),
        "load: expected warmup + rate × duration_s <= 1000000, got 2000005 at rate 2000",
    ),
    (edit('name = "m"', 'name = ""'), "models[0].name: expected a non-empty string, got ''"),
    (
        edit('name = "m"', 'name = "m"\n[[models]]\nname = "m"'),
        "models[1]: expected each model once, got 'm'",
    ),
    (edit('name = "m"', "nam = 'm'"), "models[0]: unknown key 'nam' (did you mean 'name'?)"),
    (
        edit('items = ["hello"]', "items = []"),
        "prompts.items: expected a non-empty list of strings, got []",
    ),
    (
        edit('items = ["hello"]', 'items = ["hello", ""]'),
        "prompts.items[1]: expected a non-empty string, got ''",
    ),
    (
        edit('items = ["hello"]', 'items = ["a"]\nfile = "p.json"'),
        "prompts: expected exactly one of items or file",
    ),
    (edit('[prompts]\nitems = ["hello"]\n', ""), "prompts: expected exactly one of items or file"),
    (
        edit("[target]", 'name = "no spaces please"\n[target]'),
        "name: expected up to 64 letters, digits, '.', '_' or '-', got 'no spaces please'",
    ),
    (
        edit("8000/v1", "8000/v1?x=1"),
        "target.base_url: expected an http:// or https:// URL with a host (no query or fragment), "
        "got 'http://127.0.0.1:8000/v1?x=1'",
    ),
    (
        edit("http://127.0.0.1:8000/v1", "ftp://host/v1"),
        "target.base_url: expected an http:// or https:// URL with a host (no query or fragment), "
        "got 'ftp://host/v1'",
    ),
    (
        edit("http://127.0.0.1:8000/v1", "http://[::1"),
        "target.base_url: expected an http:// or https:// URL with a host, got 'http://[::1'",
    ),
    (
        edit("[target]", '[target]\napi = "embeddings"'),
        "target.api: expected one of 'chat', 'completions', got 'embeddings'",
    ),
    (
        edit("[target]", "[target]\ntimeout_s = 0"),
        "target.timeout_s: expected a positive number up to 86400, got 0",
    ),
    (
        edit("[target]", "[target]\napi_key = 'x'"),
        "target: unknown key 'api_key' (did you mean 'api_key_env'?)",
    ),
    (
        edit('base_url = "http://127.0.0.1:8000/v1"', "[target.simulate]\nslots = 0"),
        "target.simulate.slots: expected a positive integer, got 0",
    ),
    (
        edit('base_url = "http://127.0.0.1:8000/v1"', "[target.simulate]\nerror_rate = 2"),
        "target.simulate.error_rate: expected a number from 0 to 1, got 2",
    ),
    (
        edit(
            'base_url = "http://127.0.0.1:8000/v1"',
            "[target.simulate]\nerror_rate = 0.6\ndrop_rate = 0.6",
        ),
        "target.simulate: expected the fault rates (*_rate) to add up to at most 1, got 1.2",
    ),
    (
        edit('base_url = "http://127.0.0.1:8000/v1"', "[target.simulate]\nttft = 5"),
        "target.simulate: unknown key 'ttft' (did you mean 'ttft_ms'?)",
    ),
    (
        edit(
            'base_url = "http://127.0.0.1:8000/v1"', 'base_url = "http://h/v1"\n[target.simulate]'
        ),
        "target: expected base_url or [target.simulate], not both",
    ),
    (
        MINIMAL + "[request]\nmax_tokens = 0\n",
        "request.max_tokens: expected a positive integer, got 0",
    ),
    (
        MINIMAL + "[request]\ntemperature = -1\n",
        "request.temperature: expected a number >= 0, got -1",
    ),
    (MINIMAL + "[request]\nstream = 'yes'\n", "request.stream: expected true or false, got 'yes'"),
    (MINIMAL + "[request]\nextra = 3\n", "request.extra: expected a table, got 3"),
    (
        MINIMAL + "[request]\nextra = { max_tokens = 3 }\n",
        "request.extra: key 'max_tokens' is set by loadbench; use request.max_tokens",
    ),
    (
        MINIMAL + "[request]\nextra = { a = [1, inf] }\n",
        "request.extra.a[1]: expected a finite number, got inf",
    ),
    (
        MINIMAL + "[request]\nextra = { when = 1979-05-27 }\n",
        "request.extra.when: expected a string, number, boolean, array or table, got 1979-05-27",
    ),
    ("target = 3\n" + MINIMAL, "line 2, column 8: invalid TOML: Cannot overwrite a value"),
    ("colour = 'blue'\n" + MINIMAL, "top level: unknown key 'colour'"),
    (
        "load = 3\n" + MINIMAL.replace("[load]\nconcurrency = [1]\nrequests = 4\n", ""),
        "load: expected a table, got 3",
    ),
    (MINIMAL + "[laod]\n", "top level: unknown key 'laod' (did you mean 'load'?)"),
    ("name = \n", "line 1, column 8: invalid TOML: Invalid value"),
]


@pytest.mark.parametrize(("text", "problem"), BAD, ids=[p for _, p in BAD])
def test_each_mistake_reads_exactly(tmp_path: Path, text: str, problem: str) -> None:
    assert problem in problems_of(tmp_path, text)


def test_request_extra_takes_any_keys(tmp_path: Path) -> None:
    text = MINIMAL + "[request]\nextra = { anything_goes = { deeper = [1, 'x'] }, n = 1 }\n"
    s = load_scenario(write(tmp_path, text), env={})
    assert s.request.extra == {"anything_goes": {"deeper": [1, "x"]}, "n": 1}


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace("concurrency = [1]", "concurrency = [0]")
        .replace("requests = 4", "requests = 4\nwarmpu = 1")
        .replace('items = ["hello"]', "items = [3]")
    )
    assert problems_of(tmp_path, text) == (
        "prompts.items[0]: expected a non-empty string, got 3",
        "load: unknown key 'warmpu' (did you mean 'warmup'?)",
        "load.concurrency[0]: expected a positive integer, got 0",
    )


def test_the_message_names_the_file_on_every_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("requests = 4", "requests = 0\nseed = 'x'"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, env={})
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{path}: load.") for line in lines)
    assert info.value.exit_code == 2


def test_toml_syntax_error_is_one_problem_with_its_place(tmp_path: Path) -> None:
    assert problems_of(tmp_path, 'name = "x"\n[load\n') == (
        "line 2, column 6: invalid TOML: Expected ']' at the end of a table declaration",
    )


def test_unreadable_scenario_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "missing.toml", env={})
    assert info.value.problems == ("cannot read: No such file or directory",)
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path, env={})
    assert info.value.problems == ("cannot read: Is a directory",)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(latin1, env={})
    assert info.value.problems == ("expected UTF-8 text, got byte 0xe9 at 11",)
    with pytest.raises(ScenarioError) as info:
        load_scenario("bad\0name.toml", env={})
    assert info.value.problems[0].startswith("cannot read: ")


def test_secrets_are_never_echoed(tmp_path: Path) -> None:
    key = "sk-proj-abcdefSECRET123"
    text = MINIMAL.replace("[target]", f'[target]\napi_key_env = "{key}"').replace(
        "http://127.0.0.1:8000/v1", "http://user:hunter2pass@127.0.0.1:8000/v1"
    )
    problems = problems_of(tmp_path, text)
    assert len(problems) == 2
    assert not any("SECRET" in p or "hunter2" in p for p in problems)


# -- the environment ----------------------------------------------------------------------

SIM = MINIMAL.replace('base_url = "http://127.0.0.1:8000/v1"', "[target.simulate]\nslots = 2")


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, None),
        ({"FOUNDRY_LOCAL_ENDPOINT": "http://127.0.0.1:5273"}, "http://127.0.0.1:5273/v1"),
        ({"FOUNDRY_LOCAL_ENDPOINT": "http://127.0.0.1:5273/"}, "http://127.0.0.1:5273/v1"),
        ({"FOUNDRY_LOCAL_ENDPOINT": "http://127.0.0.1:5273/v1/"}, "http://127.0.0.1:5273/v1"),
        ({"FOUNDRY_LOCAL_ENDPOINT": "http://h:5273/api"}, "http://h:5273/api/v1"),
        (
            {"OPENAI_BASE_URL": "http://o:1/v1", "FOUNDRY_LOCAL_ENDPOINT": "http://f:2"},
            "http://o:1/v1",
        ),
        ({"OPENAI_BASE_URL": "https://o.example"}, "https://o.example/v1"),
        ({"OPENAI_BASE_URL": "http://o:1/openai"}, "http://o:1/openai"),  # has a path: kept
        (
            {"LOADBENCH_BASE_URL": " http://l:3 ", "OPENAI_BASE_URL": "http://o:1/v1"},
            "http://l:3/v1",
        ),
        ({"LOADBENCH_BASE_URL": "  ", "OPENAI_BASE_URL": "http://o:1/v1"}, "http://o:1/v1"),
        ({"LOADBENCH_BASE_URL": "", "FOUNDRY_LOCAL_ENDPOINT": "http://f:2"}, "http://f:2/v1"),
    ],
)
def test_environment_overrides_in_order(
    tmp_path: Path, env: dict[str, str], url: str | None
) -> None:
    s = load_scenario(write(tmp_path, SIM), env=env)
    assert s.target.base_url == url
    assert (s.target.simulate is None) == (url is not None)  # an override drops the simulator


def test_environment_supplies_a_missing_base_url(tmp_path: Path) -> None:
    text = MINIMAL.replace('base_url = "http://127.0.0.1:8000/v1"\n', "")
    s = load_scenario(write(tmp_path, text), env={"OPENAI_BASE_URL": "http://x:1/v1"})
    assert s.target.base_url == "http://x:1/v1"


def test_bad_environment_url_is_a_problem(tmp_path: Path) -> None:
    assert problems_of(tmp_path, SIM, env={"OPENAI_BASE_URL": "localhost:8000"}) == (
        "OPENAI_BASE_URL: expected an http:// or https:// URL with a host (no query or "
        "fragment), got 'localhost:8000'",
    )


def test_foundry_scenario_follows_its_endpoint() -> None:
    path = next(p for p in SCENARIOS if p.name == "foundry-local.toml")
    assert load_scenario(path, env={}).target.base_url == "http://127.0.0.1:5273/v1"
    env = {"FOUNDRY_LOCAL_ENDPOINT": "http://127.0.0.1:61234"}
    assert load_scenario(path, env=env).target.base_url == "http://127.0.0.1:61234/v1"


# -- prompt files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("p.json", '["one", "two"]'),
        ("p.json", '[{"prompt": "one", "id": 1}, {"prompt": "two", "tags": ["x"]}]'),
        ("p.jsonl", '"one"\n\n{"prompt": "two", "source": "x"}\n'),
        ("p.jsonl", '{"prompt": "one"}\r\n{"prompt": "two"}'),
    ],
)
def test_prompt_file_formats(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    text = MINIMAL.replace('items = ["hello"]', f'file = "{name}"')
    s = load_scenario(write(tmp_path, text), env={})
    assert s.prompts == ("one", "two")
    assert s.prompts_file == name


def test_prompt_file_is_relative_to_the_scenario(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "p.json").write_text('["x"]')
    text = MINIMAL.replace('items = ["hello"]', 'file = "p.json"')
    assert load_scenario(write(sub, text), env={}).prompts == ("x",)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "prompts.file: expected at least one prompt in 'p.json', got none"),
        ("[]", "prompts.file: expected at least one prompt in 'p.json', got none"),
        ("  \n\n", "prompts.file: expected at least one prompt in 'p.json', got none"),
        (
            '["a", ',
            "prompts.file: 'p.json': invalid JSON: Expecting value: line 1 column 7 (char 6)",
        ),
        (
            '["a", 3]',
            "prompts.file: 'p.json' item 1: expected a non-empty string or an object with a "
            '"prompt" string, got 3',
        ),
        (
            '"a"\n{"text": "b"}',
            "prompts.file: 'p.json' line 2: expected a non-empty string or an object with a "
            "\"prompt\" string, got {'text': 'b'}",
        ),
        (
            '"a"\nnot json',
            "prompts.file: 'p.json' line 2: invalid JSON: Expecting value: line 1 column 1 "
            "(char 0)",
        ),
        (
            '["\\ud800"]',
            "prompts.file: 'p.json' item 0: expected a non-empty string or an object with a "
            "\"prompt\" string, got '\\ud800'",
        ),
    ],
)
def test_bad_prompt_files(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "p.json").write_text(content, encoding="utf-8")
    text = MINIMAL.replace('items = ["hello"]', 'file = "p.json"')
    assert problem in problems_of(tmp_path, text)


def test_bad_prompt_file_lists_five_then_counts(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps(list(range(8))))
    text = MINIMAL.replace('items = ["hello"]', 'file = "p.json"')
    problems = problems_of(tmp_path, text)
    assert len(problems) == 6
    assert problems[-1] == "prompts.file: 'p.json': and 3 more entries like those"


def test_prompt_file_not_utf8_or_a_directory(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_bytes(b'["\xff"]')
    (tmp_path / "d").mkdir()
    for name, problem in [
        ("p.json", "prompts.file: expected UTF-8 text in 'p.json', got byte 0xff at 2"),
        ("d", "prompts.file: cannot read 'd': Is a directory"),
    ]:
        text = MINIMAL.replace('items = ["hello"]', f'file = "{name}"')
        assert problems_of(tmp_path, text) == (problem,)


# -- the command line -------------------------------------------------------------------------


@pytest.fixture
def sim_scenario(tmp_path: Path) -> Scenario:
    return load_scenario(write(tmp_path, SIM), env={})


def test_overrides_apply(sim_scenario: Scenario) -> None:
    s = apply_overrides(
        sim_scenario,
        base_url="http://127.0.0.1:9000",
        models=["a", "b"],
        rate=[2.0, 4],
        duration_s=5,
    )
    assert s.target.base_url == "http://127.0.0.1:9000/v1"
    assert s.target.simulate is None
    assert s.models == ("a", "b")
    assert (s.load.mode, s.load.rate, s.load.concurrency) == (LoadMode.RATE, (2.0, 4), ())
    assert (s.load.requests, s.load.duration_s) == (None, 5.0)
    back = apply_overrides(s, concurrency=[3], requests=7)
    assert (back.load.mode, back.load.concurrency, back.load.rate) == (
        LoadMode.CONCURRENCY,
        (3,),
        (),
    )
    assert (back.load.requests, back.load.duration_s) == (7, None)


def test_no_overrides_is_identity(sim_scenario: Scenario) -> None:
    assert apply_overrides(sim_scenario) == sim_scenario


def test_override_problems_all_at_once(sim_scenario: Scenario) -> None:
    with pytest.raises(ScenarioError) as info:
        apply_overrides(
            sim_scenario,
            base_url="nope",
            models=["", "x", "x"],
            concurrency=[0, 2],
            requests=0,
        )
    assert isinstance(info.value, UsageError)
    assert info.value.path == "command line"
    assert info.value.problems == (
        "--base-url: expected an http:// or https:// URL with a host (no query or fragment), "
        "got 'nope'",
        "--model: expected a non-empty string, got ''",
        "--model: expected each model once, got 'x'",
        "--concurrency: expected positive integers up to 100000, got 0",
        "--requests: expected a positive integer, got 0",
    )


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"concurrency": [1], "rate": [1.0]},
            "--concurrency, --rate: expected one of them, got both",
        ),
        (
            {"requests": 1, "duration_s": 1.0},
            "--requests, --duration-s: expected one of them, got both",
        ),
        ({"rate": [math.inf]}, "--rate: expected positive numbers of at least 0.001, got inf"),
        ({"duration_s": -1.0}, "--duration-s: expected a positive number up to 604800, got -1.0"),
        (
            {"rate": [5000.0], "duration_s": 600.0},
            "load: expected warmup + rate × duration_s <= 1000000, got 3000000 at rate 5000",
        ),
    ],
)
def test_override_problems(
    sim_scenario: Scenario, options: dict[str, object], problem: str
) -> None:
    with pytest.raises(ScenarioError) as info:
        apply_overrides(sim_scenario, **options)  # type: ignore[arg-type]
    assert info.value.problems == (problem,)


def test_parse_lists() -> None:
    assert parse_int_list("1,4,16", "--concurrency") == (1, 4, 16)
    assert parse_int_list(" 2 , 3", "--concurrency") == (2, 3)
    assert parse_float_list("0.5,2", "--rate") == (0.5, 2.0)


@pytest.mark.parametrize("text", ["a,b", "", "1,,2", "0", "1,-2", "1.5"])
def test_parse_int_list_errors(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_int_list(text, "--concurrency")
    assert str(info.value) == (
        f"--concurrency: expected a comma-separated list of positive integers, got {text!r}"
    )


@pytest.mark.parametrize("text", ["x", "", "1,nan", "inf", "0", "-1"])
def test_parse_float_list_errors(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_float_list(text, "--rate")
    assert str(info.value) == (
        f"--rate: expected a comma-separated list of positive numbers, got {text!r}"
    )


# -- nothing but LoadbenchError, whatever the input ----------------------------------------------

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_toml_leaf = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-3, max_value=70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["chat", "poisson", "gamma", "http://127.0.0.1:1/v1", "p.json", "", "sk-x"]),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
    st.times(),
)
_toml_value = st.recursive(
    _toml_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _toml(value: object) -> str:
    """A TOML value for a Python one, written inline (tests only; good enough to fuzz)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return {math.inf: "inf", -math.inf: "-inf"}.get(
            value, "nan" if value != value else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def _document(doc: dict[str, object]) -> str:
    return "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in doc.items()) + "\n"


VALID = tomllib.loads(FULL.replace('file = "prompts.jsonl"', 'items = ["a", "b"]'))


def _mutate(data: st.DataObject, doc: object, depth: int = 0) -> object:
    """Replace, drop or add one thing somewhere in a parsed document."""
    if isinstance(doc, dict) and doc and depth < 4 and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(doc)))
        return {**doc, key: _mutate(data, doc[key], depth + 1)}
    if isinstance(doc, list) and doc and depth < 4 and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(doc) - 1))
        return [*doc[:i], _mutate(data, doc[i], depth + 1), *doc[i + 1 :]]
    action = data.draw(st.sampled_from(["replace", "drop", "add"]))
    if action == "drop" and isinstance(doc, dict) and doc:
        key = data.draw(st.sampled_from(sorted(doc)))
        return {k: v for k, v in doc.items() if k != key}
    if action == "add" and isinstance(doc, dict):
        key = data.draw(st.text(string.ascii_lowercase + "_", min_size=1, max_size=12))
        return {**doc, key: data.draw(_toml_value)}
    return data.draw(_toml_value)


def _only_loadbench_errors(path: Path, env: dict[str, str] | None = None) -> None:
    try:
        s = load_scenario(path, env=env or {})
    except LoadbenchError:
        return
    json.dumps(s.to_dict(), allow_nan=False)  # what loads also serialises


def test_the_fuzz_base_document_is_valid(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, _document(VALID)), env={})
    assert s.models == ("model-a", "model-b")


@FUZZ
@given(content=st.text(max_size=300).map(str.encode) | st.binary(max_size=300))
def test_random_text_raises_only_loadbench_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(content)
    _only_loadbench_errors(path)


@FUZZ
@given(data=st.data())
def test_mutated_documents_raise_only_loadbench_errors(tmp_path: Path, data: st.DataObject) -> None:
    doc = VALID
    for _ in range(data.draw(st.integers(1, 3))):
        mutated = _mutate(data, doc)
        doc = mutated if isinstance(mutated, dict) else doc
    env = data.draw(
        st.dictionaries(st.sampled_from(BASE_URL_ENV), st.text(max_size=20), max_size=2)
    )
    _only_loadbench_errors(write(tmp_path, _document(doc), "fuzz.toml"), env)


@FUZZ
@given(data=st.data(), text=st.text(max_size=200))
def test_mutated_toml_text_raises_only_loadbench_errors(
    tmp_path: Path, data: st.DataObject, text: str
) -> None:
    source = FULL.replace('file = "prompts.jsonl"', 'items = ["a"]')
    start = data.draw(st.integers(0, len(source)))
    end = data.draw(st.integers(start, min(len(source), start + 40)))
    path = write(tmp_path, source[:start] + text + source[end:], "fuzz.toml")
    _only_loadbench_errors(path)


@FUZZ
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_prompt_files_raise_only_loadbench_errors(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "p.json").write_bytes(content)
    _only_loadbench_errors(write(tmp_path, MINIMAL.replace('items = ["hello"]', 'file = "p.json"')))


def test_pathological_nesting(tmp_path: Path) -> None:
    for text in [
        "a = " + "[" * 5000 + "]" * 5000,
        "a = " + "{b = " * 3000 + "1" + "}" * 3000,
        MINIMAL + "[request]\nextra." + ".".join(["x"] * 500) + " = 1\n",
        MINIMAL + f"[request]\nmax_tokens = {10**400}\n",
        MINIMAL.replace("requests = 4", f"duration_s = {10**400}"),
        MINIMAL.replace("requests = 4", "requests = " + "9" * 5000),
    ]:
        with pytest.raises(ScenarioError):
            load_scenario(write(tmp_path, text), env={})
    text = MINIMAL.replace('items = ["hello"]', 'file = "p.json"')
    for content in ["[" * 100_000, "[" + "9" * 5000 + "]", "9" * 5000, '"x"\n' + "[" * 100_000]:
        (tmp_path / "p.json").write_text(content)
        with pytest.raises(ScenarioError):
            load_scenario(write(tmp_path, text), env={})


def test_the_reader_knows_every_simulator_fault_rate() -> None:
    """``[target.simulate]`` checks its fault rates by name without importing the simulator."""
    from loadbench.scenario.read import _SIM_FAULTS
    from loadbench.sim.faults import RATE_FIELDS

    assert sorted(_SIM_FAULTS) == sorted(RATE_FIELDS)


def test_monitor_interval_is_read_and_checked(tmp_path: Path) -> None:
    assert load_scenario(write(tmp_path, MINIMAL), env={}).monitor.interval_s == 0.5
    chosen = load_scenario(write(tmp_path, MINIMAL + "[monitor]\ninterval_s = 0.25\n"), env={})
    assert chosen.monitor.interval_s == 0.25
    assert chosen.to_dict()["monitor"] == {"interval_s": 0.25}
    (problem,) = problems_of(tmp_path, MINIMAL + "[monitor]\ninterval_s = 0\n")
    assert problem.startswith("monitor.interval_s: expected")
    (problem,) = problems_of(tmp_path, MINIMAL + "[monitor]\nevery = 1\n")
    assert "every" in problem
