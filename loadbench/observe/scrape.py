"""The server's own Prometheus metrics, read before, during and after each stage.

Client figures say what users saw; the server's counters say why (requests deferred,
KV-cache use, tokens predicted). Parsing uses prometheus-client's parser, not our own.
Only the families of known LLM servers are kept, so a result file does not fill up with
process and Go-runtime metrics. Histogram buckets are dropped too: a vLLM server exposes a
dozen histograms of ~20 buckets per label set, which would fill the series cap before the
``_sum`` and ``_count`` series that give each stage's mean queue, prefill and decode time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families

KNOWN_PREFIXES = ("llamacpp:", "vllm:", "sglang:", "tgi_")
MAX_SERIES = 200
SCRAPE_INTERVAL_S = 1.0
_SKIPPED = ("_created", "_bucket")
_CUMULATIVE = ("_total", "_sum", "_count")  # counters, and histogram or summary totals


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of known LLM-server families, keyed ``name{label="value",...}``."""
    out: dict[str, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError):
        return out
    for family in families:
        for sample in family.samples:
            if not sample.name.startswith(KNOWN_PREFIXES) or sample.name.endswith(_SKIPPED):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
            if len(out) >= MAX_SERIES:
                return out
    return out


def beside_api(base_url: str, name: str) -> str:
    """``http://host:port/v1`` → ``http://host:port/<name>``: where llama.cpp, vLLM and
    SGLang serve their operational routes (``/metrics``, ``/health``) beside ``/v1``."""
    url = httpx.URL(base_url)
    path = url.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return str(url.copy_with(path=f"{path}/{name}"))


def default_metrics_url(base_url: str) -> str:
    return beside_api(base_url, "metrics")


@dataclass
class StageMetrics:
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Counters as their change over the stage, gauges as their peak and last value.

        A histogram's or summary's ``_sum`` and ``_count`` get a change too: their ratio is
        the stage's mean (e.g. vLLM's queue time), which no single snapshot holds.
        """
        delta = {
            k: round(v - self.before[k], 6)
            for k, v in self.after.items()
            if k in self.before and k.partition("{")[0].endswith(_CUMULATIVE)
        }
        return {"delta": delta, "peak": self.peak, "after": self.after}


class MetricsScraper:
    """Reads one metrics URL; an answer that is not Prometheus text leaves it switched off."""

    def __init__(self, url: str) -> None:
        self.url = url
        # No TLS over http://: skip loading the CA bundle (~60 ms before the first request).
        verify = not url.startswith("http://")
        self._client = httpx.AsyncClient(timeout=2.0, trust_env=False, verify=verify)
        self._current = StageMetrics()

    async def read(self) -> dict[str, float]:
        try:
            response = await self._client.get(self.url)
        except httpx.HTTPError:
            return {}
        return parse_metrics(response.text) if response.status_code == 200 else {}

    async def sample(self) -> None:
        """Runs for one stage until cancelled: the before snapshot, then peaks."""
        self._current = StageMetrics(before=await self.read())
        while True:
            await anyio.sleep(SCRAPE_INTERVAL_S)
            self._fold(await self.read())

    def _fold(self, values: dict[str, float]) -> None:
        peak = self._current.peak
        for k, v in values.items():
            if v > peak.get(k, float("-inf")):
                peak[k] = v

    async def finish(self) -> StageMetrics:
        with anyio.CancelScope(shield=True), anyio.move_on_after(3):
            after = await self.read()
            self._fold(after)
            self._current.after = after
        return self._current

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._client.aclose()
