"""Reading a server's Prometheus metrics: parsing by value, scraping over a real socket."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
import pytest

from loadbench.observe.scrape import MetricsScraper, default_metrics_url, parse_metrics

LLAMACPP = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 120
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 3
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 5
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 9.5
"""


def test_parse_keeps_llm_server_families_only() -> None:
    got = parse_metrics(LLAMACPP)
    assert got == {
        "llamacpp:prompt_tokens_total": 120.0,
        "llamacpp:requests_processing": 3.0,
        "llamacpp:requests_deferred": 5.0,
    }
    assert parse_metrics("not { prometheus") == {}


def test_labels_are_part_of_the_key() -> None:
    text = '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name="m"} 2\n'
    assert parse_metrics(text) == {'vllm:num_requests_waiting{model_name="m"}': 2.0}


def test_default_metrics_url() -> None:
    assert default_metrics_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/metrics"
    assert default_metrics_url("http://h:1/api/v1/") == "http://h:1/api/metrics"


async def scrape_one_stage(next_body: Callable[[], str], seconds: float) -> dict[str, object]:
    """One stage's metrics from a real /metrics server on 127.0.0.1 that answers each read
    with ``next_body()``: the before snapshot, ``sample`` for ``seconds``, then ``finish``."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            body = next_body().encode()
            await stream.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n" % len(body) + body
            )

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics")
        with anyio.move_on_after(seconds):
            await scraper.sample()
        stage = (await scraper.finish()).to_dict()
        await scraper.aclose()
        tg.cancel_scope.cancel()
    return stage


@pytest.mark.anyio
async def test_a_stage_gets_counter_deltas_and_gauge_peaks() -> None:
    values = iter([120, 150, 180])
    stage = await scrape_one_stage(
        lambda: LLAMACPP.replace("total 120", f"total {next(values, 180)}"), 1.3
    )
    assert stage["delta"] == {"llamacpp:prompt_tokens_total": 60.0}
    assert stage["peak"]["llamacpp:requests_deferred"] == 5.0  # type: ignore[index]


def vllm_text(queue_sum: float, count: int) -> str:
    """vLLM-style exposition: a labelled gauge and a labelled histogram with its buckets."""
    m = 'model_name="m"'
    return (
        "# HELP vllm:num_requests_waiting Requests waiting.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f"vllm:num_requests_waiting{{{m}}} {count % 3}\n"
        "# HELP vllm:request_queue_time_seconds Time spent waiting.\n"
        "# TYPE vllm:request_queue_time_seconds histogram\n"
        f'vllm:request_queue_time_seconds_bucket{{le="0.5",{m}}} {count}\n'
        f'vllm:request_queue_time_seconds_bucket{{le="+Inf",{m}}} {count}\n'
        f"vllm:request_queue_time_seconds_sum{{{m}}} {queue_sum}\n"
        f"vllm:request_queue_time_seconds_count{{{m}}} {count}\n"
        f"vllm:request_queue_time_seconds_created{{{m}}} 1.7e9\n"
    )


def test_parse_drops_histogram_buckets_and_created_stamps() -> None:
    assert parse_metrics(vllm_text(1.5, 4)) == {
        'vllm:num_requests_waiting{model_name="m"}': 1.0,
        'vllm:request_queue_time_seconds_sum{model_name="m"}': 1.5,
        'vllm:request_queue_time_seconds_count{model_name="m"}': 4.0,
    }


@pytest.mark.anyio
async def test_a_stage_gets_histogram_sum_and_count_deltas() -> None:
    """Before: 4 requests queued 1.5 s in all; after: 10 requests, 4.5 s (mean 0.5 s)."""
    bodies = iter([vllm_text(1.5, 4)])
    # the before snapshot, then perhaps one more read
    stage = await scrape_one_stage(lambda: next(bodies, vllm_text(4.5, 10)), 0.8)
    assert stage["delta"] == {
        'vllm:request_queue_time_seconds_sum{model_name="m"}': 3.0,
        'vllm:request_queue_time_seconds_count{model_name="m"}': 6.0,
    }
    assert stage["after"]['vllm:num_requests_waiting{model_name="m"}'] == 1.0  # type: ignore[index]
