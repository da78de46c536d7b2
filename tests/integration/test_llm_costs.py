"""Cost per request from real clients and real instrumentation packages against the loopback stub.

``llm_app.py`` runs with ``LLM_APP_SCENARIOS=cost``: the stub's usage x1000 with cache and
reasoning tokens (``-cache-big`` models), streamed and not, plus a model no price table knows.
Each expected cost is computed here by hand from the genai-prices release pinned in
tests/constraints.txt (0.2.3), in USD per million tokens, which is micro-USD per token:

* gpt-4o-mini (the stub answers ``gpt-4o-mini-2024-07-18``): input 0.15, cached input 0.075,
  output 0.60. Usage: 11,000 input tokens of which 3,000 cached, 7,000 output tokens of which
  2,000 reasoning (output includes reasoning: priced as output).
* claude-3-5-haiku (the stub answers ``claude-3-5-haiku-20241022``): input 0.80, cache read
  0.08, cache write 1.00, output 4.00. Usage: 13,000 uncached input + 3,000 cache-read +
  2,000 cache-write tokens (the instrumentations report input_tokens = 18,000, the GenAI
  convention), 5,000 output tokens.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from fractions import Fraction

import pytest

from .conftest import require_module
from .llm_stub import LLMStub
from .test_llm_spans import HERE, _env, _run

pytestmark = pytest.mark.integration

F = Fraction
# uncached input, cache read, output: 8,000 * 0.15 + 3,000 * 0.075 + 7,000 * 0.60
GPT_4O_MINI = 8_000 * F("0.15") + 3_000 * F("0.075") + 7_000 * F("0.60")
# 13,000 * 0.80 + 3,000 * 0.08 + 2,000 * 1.00 + 5,000 * 4.00
HAIKU = 13_000 * F("0.80") + 3_000 * F("0.08") + 2_000 * F(1) + 5_000 * F(4)
# openai-v2 2.4b0 reports no cached tokens (only gen_ai.usage.input_tokens/output_tokens): its
# spans can only be priced as 11,000 uncached input tokens, 11,000 * 0.15 + 7,000 * 0.60.
GPT_4O_MINI_NO_CACHE_KEYS = 11_000 * F("0.15") + 7_000 * F("0.60")
# OpenLLMetry alone reports 6 (x1000) streamed output tokens for Anthropic (see test_llm_spans)
HAIKU_6K_OUTPUT = HAIKU + 1_000 * F(4)
UNPRICED = (0, 1)


def micro(value: Fraction) -> int:
    assert value.denominator == 1  # the stub's counts make every cost a whole micro-USD
    return int(value)


OPENAI = {"nonstream": (micro(GPT_4O_MINI), 0), "stream": (micro(GPT_4O_MINI), 0)}
OPENAI_V2 = {k: (micro(GPT_4O_MINI_NO_CACHE_KEYS), 0) for k in OPENAI}
ANTHROPIC = {"nonstream": (micro(HAIKU), 0), "stream": (micro(HAIKU), 0)}

COMBOS: dict[str, tuple[list[str], dict[str, str], dict[str, tuple[int, int]]]] = {
    # combo: (modules it needs, env, scenario -> (cost in micro-USD, unpriced requests))
    "openai_v2": (["opentelemetry.instrumentation.openai_v2"], {}, OPENAI_V2),
    "openllmetry_openai": (["opentelemetry.instrumentation.openai"], {}, OPENAI),
    "openinference_openai": (["openinference.instrumentation.openai"], {}, OPENAI),
    "anthropic_sdk": (["anthropic"], {}, ANTHROPIC),
    "openllmetry_anthropic": (["opentelemetry.instrumentation.anthropic"], {}, ANTHROPIC),
    "openllmetry_anthropic_sdk_off": (
        ["opentelemetry.instrumentation.anthropic"],
        {"ANTHROPIC_OPEN_TELEMETRY": "false"},
        {**ANTHROPIC, "stream": (micro(HAIKU_6K_OUTPUT), 0)},
    ),
}


@pytest.fixture(scope="module")
def stub() -> Iterator[LLMStub]:
    with LLMStub() as server:
        yield server


@pytest.mark.parametrize("combo", list(COMBOS))
def test_cost_per_config_is_the_price_by_hand(stub: LLMStub, combo: str) -> None:
    modules, extra_env, expected = COMBOS[combo]
    for module in ["openai", "anthropic", "genai_prices", *modules]:
        require_module(module)
    app = combo.removesuffix("_sdk_off")
    env = _env(stub, {**extra_env, "LLM_APP_SCENARIOS": "cost"})
    result = _run([sys.executable, str(HERE / "llm_app.py"), app], env)
    got = {c: (q["cost_microusd"], q["unpriced"]) for c, q in result["quotas"].items()}
    assert got == {**expected, "unpriced": UNPRICED}, json.dumps(result, indent=1)
    if expected is not OPENAI_V2:  # the cache breakdown really was on the spans
        assert all(
            any("cache_read" in key for key in result["usage_keys"][scenario])
            for scenario in expected
        ), result["usage_keys"]
    assert result["stats"]["errors"] == 0
    assert result["stats"]["skipped"] == 0
