"""The model-choice sections of a scenario: [[models]] targets and metadata, prompt sets with
ids and aspects, [quality], [cost], [models_catalog] and the workshop's BENCH_* variables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadbench.errors import ScenarioError
from loadbench.scenario import load_scenario

HEAD = """
name = "choose"
[target]
base_url = "http://127.0.0.1:9/v1"
[request]
max_tokens = 8
extra = { top_k = 5 }
[load]
concurrency = [1]
requests = 4
"""
PROMPTS = '[prompts]\nitems = ["one", "two"]\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(HEAD + text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(write(tmp_path, text), env=env or {})
    return str(caught.value)


def test_a_model_entry_carries_its_own_target_extra_and_facts(tmp_path: Path) -> None:
    s = load_scenario(
        write(
            tmp_path,
            PROMPTS
            + """
[[models]]
name = "a"
[[models]]
name = "b"
base_url = "http://127.0.0.1:8081/v1"
api_key_env = "B_KEY"
extra = { top_k = 1, seed = 3 }
size_mb = 500
license = "apache-2.0"
capabilities = ["chat", "summarize"]
""",
        ),
        env={},
    )
    assert s.models == ("a", "b")
    b = s.model_spec("b")
    assert (b.base_url, b.api_key_env, dict(b.extra)) == (
        "http://127.0.0.1:8081/v1",
        "B_KEY",
        {"top_k": 1, "seed": 3},
    )
    assert (b.meta.size_mb, b.meta.license, b.meta.capabilities) == (
        500.0,
        "apache-2.0",
        ("chat", "summarize"),
    )
    assert s.model_spec("a").base_url is None
    assert s.model_spec("only-on-the-command-line").name == "only-on-the-command-line"
    targets = s.to_dict()["model_targets"]
    assert targets == {
        "b": {
            "base_url": "http://127.0.0.1:8081/v1",
            "api_key_env": "B_KEY",
            "extra": {"top_k": 1, "seed": 3},
        }
    }


def test_a_scenario_without_the_new_sections_resolves_as_before(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, PROMPTS + '[[models]]\nname = "a"\n'), env={})
    d = s.to_dict()
    for key in ("prompt_ids", "model_targets", "quality", "cost", "env_applied"):
        assert key not in d
    assert s.ids == ("p1", "p2")
    assert s.aspects == ((), ())


def test_prompt_files_carry_ids_and_aspects(tmp_path: Path) -> None:
    entries = [
        "plain",
        {"id": "rag", "prompt": "Explain RAG.", "aspects": ["retrieval", "generation"]},
        {"prompt": "no id", "source": "kept out"},
    ]
    (tmp_path / "p.json").write_text(json.dumps(entries), encoding="utf-8")
    s = load_scenario(
        write(tmp_path, '[prompts]\nfile = "p.json"\n[[models]]\nname = "a"\n'), env={}
    )
    assert s.prompts == ("plain", "Explain RAG.", "no id")
    assert s.prompt_ids == ("p1", "rag", "p3")
    assert s.prompt_aspects == ((), ("retrieval", "generation"), ())
    assert s.to_dict()["prompt_aspects"] == [[], ["retrieval", "generation"], []]


def test_inline_prompt_tables(tmp_path: Path) -> None:
    text = """
[prompts]
items = ["x", { id = "sum", prompt = "Summarise.", aspects = ["owner"] }]
[[models]]
name = "a"
"""
    s = load_scenario(write(tmp_path, text), env={})
    assert (s.ids, s.aspects) == (("p1", "sum"), ((), ("owner",)))


def test_quality_and_cost_are_read(tmp_path: Path) -> None:
    text = (
        PROMPTS
        + """
[[models]]
name = "a"
[models_catalog]
file = "models.json"
[quality]
judge_model = "judge"
judge_base_url = "http://127.0.0.1:8082/v1"
judge_api_key_env = "J_KEY"
samples = true
[cost]
device_watts = 45
price_per_kwh = 0.3
currency = "USD"
"""
    )
    s = load_scenario(write(tmp_path, text), env={})
    assert s.quality is not None
    assert s.quality.method == "judge"
    assert (s.quality.judge_model, s.quality.judge_api_key_env, s.quality.samples) == (
        "judge",
        "J_KEY",
        True,
    )
    assert s.cost is not None
    assert (s.cost.device_watts, s.cost.price_per_kwh) == (45.0, 0.3)
    assert s.cost.currency == "USD"
    assert s.catalog_file == "models.json"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[models]]\nname = "a"\nbase_url = "ftp://x"\n', "models[0].base_url: expected an http"),
        ('[[models]]\nname = "a"\napi_key_env = "sk-123 secret"\n', "not shown: it may be a key"),
        (
            '[[models]]\nname = "a"\nextra = { model = "x" }\n',
            "models[0].extra: key 'model' is set",
        ),
        ('[[models]]\nname = "a"\nsize_mb = -1\n', "models[0].size_mb: expected a number >= 0"),
        ('[[models]]\nname = "a"\ncapabilities = "chat"\n', "models[0].capabilities: expected a"),
        ('[[models]]\nname = "a"\nlicence = "mit"\n', "did you mean 'license'?"),
        (
            '[[models]]\nname = "a"\n[quality]\nmethod = "vibes"\n',
            "quality.method: expected one of",
        ),
        ('[[models]]\nname = "a"\n[quality]\nmethod = "judge"\n', "quality.judge_model: expected"),
        ('[[models]]\nname = "a"\n[cost]\ndevice_watts = 0\n', "cost.device_watts: expected a"),
        ('[[models]]\nname = "a"\n[cost]\ndevice_watts = 5\n', "cost.price_per_kwh: expected"),
        ('[[models]]\nname = "a"\n[models_catalog]\nfile = 3\n', "models_catalog.file: expected"),
    ],
)
def test_bad_model_choice_input_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    assert message in problems(tmp_path, PROMPTS + text)


def test_bad_prompt_entries_name_the_field(tmp_path: Path) -> None:
    entries = [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y", "aspects": "nope"}]
    (tmp_path / "p.json").write_text(json.dumps(entries), encoding="utf-8")
    found = problems(tmp_path, '[prompts]\nfile = "p.json"\n[[models]]\nname = "a"\n')
    assert "item 1.id: expected each prompt id once, got 'a'" in found
    assert "item 1.aspects: expected a list of non-empty strings" in found


def test_the_workshop_variables_replace_models_prompts_rounds_and_streaming(
    tmp_path: Path,
) -> None:
    text = PROMPTS + '[[models]]\nname = "a"\nbase_url = "http://127.0.0.1:8081/v1"\n'
    env = {
        "BENCH_MODELS": "a, b",
        "BENCH_ROUNDS": "3",
        "BENCH_STREAM": "0",
        "BENCH_PROMPT": "Say hi.",
    }
    s = load_scenario(write(tmp_path, text), env=env)
    assert s.models == ("a", "b")
    assert s.model_spec("a").base_url == "http://127.0.0.1:8081/v1"  # its entry is kept
    assert s.prompts == ("Say hi.",)
    assert s.ids == ("p1",)
    assert s.load.requests == 3  # rounds x one prompt
    assert s.request.stream is False
    assert s.to_dict()["env_applied"] == env
    rounds = load_scenario(write(tmp_path, text), env={"BENCH_ROUNDS": "2"})
    assert rounds.load.requests == 4  # rounds x two prompts


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BENCH_ROUNDS": "zero"}, "BENCH_ROUNDS: expected a positive integer, got 'zero'"),
        ({"BENCH_STREAM": "yes"}, "BENCH_STREAM: expected 0 or 1, got 'yes'"),
        ({"BENCH_MODELS": "a,a"}, "BENCH_MODELS: expected a comma-separated list of distinct"),
    ],
)
def test_bad_workshop_variables_exit_2(tmp_path: Path, env: dict[str, str], message: str) -> None:
    assert message in problems(tmp_path, PROMPTS + '[[models]]\nname = "a"\n', env)
