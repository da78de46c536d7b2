"""Real clients, real instrumentation packages, loopback stub: exact quotas from LLM spans.

Each combination runs ``llm_app.py`` in its own process (global tracer provider, the openai-v2
semconv opt-in read once per process, OpenLLMetry's OpenAI wrappers that ``uninstrument()`` does
not remove). Every scenario runs in ``quota_config(<scenario>)``, so each quota below is the
usage of one scenario: OpenAI's stub answers 11 input / 7 output tokens, Anthropic's 13 / 5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import require_module
from .llm_stub import LLMStub

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# scenario -> (input, output, other, successful, failed)
OPENAI = {
    "nonstream": (22, 14, 0, 2, 0),  # two calls: each response has its own id, both count
    "stream": (11, 7, 0, 1, 0),  # include_usage: the usage arrives when the stream ends
    "async": (22, 14, 0, 2, 0),  # one plain, one streamed, on AsyncOpenAI
    "cache": (11, 7, 0, 1, 0),  # cached/reasoning tokens are inside input/output, not added
    "error": (0, 0, 0, 0, 1),
    "framework": (11, 7, 0, 1, 0),  # an outer span repeating the usage is not counted again
}
ANTHROPIC = {
    "nonstream": (26, 10, 0, 2, 0),
    "stream": (26, 10, 0, 2, 0),  # create(stream=True) and messages.stream()
    "async": (13, 5, 0, 1, 0),
    "cache": (18, 5, 0, 1, 0),  # input_tokens = 13 + 3 cache read + 2 cache write, per the SDK
    "error": (0, 0, 0, 0, 1),
    "framework": (13, 5, 0, 1, 0),
}
# Both the anthropic SDK's span and OpenLLMetry's, same response id, separate traces: counted
# once, the first to end (the SDK's, which has the right streamed output count) wins. A failed
# call has no response id to pair the two spans, so it counts as two failed requests.
ANTHROPIC_BOTH = {**ANTHROPIC, "error": (0, 0, 0, 0, 2)}
# OpenLLMetry alone reports 6 streamed output tokens instead of 5 (it adds message_start's 1 to
# message_delta's cumulative 5): we count what the span says.
ANTHROPIC_OPENLLMETRY_ONLY = {**ANTHROPIC, "stream": (26, 12, 0, 2, 0)}

# LangChain's ChatOpenAI under OpenLLMetry's LangChain instrumentation and openai-v2: two spans
# per call in separate traces; a streamed call's LangChain span has no response id, so it is
# paired with openai-v2's by provider, request model and token counts. Each call counts once.
LANGCHAIN = {
    "nonstream": (22, 14, 0, 2, 0),  # paired by response id
    "stream": (22, 14, 0, 2, 0),  # paired by provider, model and tokens
    "async": (11, 7, 0, 1, 0),  # astream
}

COMBOS: dict[str, tuple[list[str], dict[str, str], dict[str, tuple[int, ...]], int]] = {
    # combo: (modules it needs, env, expected quotas, duplicate spans)
    "openai_v2": (["opentelemetry.instrumentation.openai_v2"], {}, OPENAI, 1),
    "openai_v2_latest": (
        ["opentelemetry.instrumentation.openai_v2"],
        {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"},
        OPENAI,
        1,
    ),
    "openllmetry_openai": (["opentelemetry.instrumentation.openai"], {}, OPENAI, 1),
    "openinference_openai": (["openinference.instrumentation.openai"], {}, OPENAI, 1),
    "langchain_openai_v2": (
        [
            "langchain_openai",
            "opentelemetry.instrumentation.langchain",
            "opentelemetry.instrumentation.openai_v2",
        ],
        {},
        LANGCHAIN,
        5,
    ),
    "anthropic_sdk": (["anthropic"], {}, ANTHROPIC, 1),
    "openllmetry_anthropic": (["opentelemetry.instrumentation.anthropic"], {}, ANTHROPIC_BOTH, 8),
    "openllmetry_anthropic_sdk_off": (
        ["opentelemetry.instrumentation.anthropic"],
        {"ANTHROPIC_OPEN_TELEMETRY": "false"},
        ANTHROPIC_OPENLLMETRY_ONLY,
        1,
    ),
}


@pytest.fixture(scope="module")
def stub() -> Iterator[LLMStub]:
    with LLMStub() as server:
        yield server


def _env(stub: LLMStub, extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "ANTHROPIC_", "OPENAI_", "TRACELOOP_"))
    }
    env.update(
        LLM_STUB_PORT=str(stub.port),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        TRACELOOP_TELEMETRY="false",  # OpenLLMetry: no usage ping (there is no network anyway)
        **extra,
    )
    return env


def _run(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{done.stderr[-4000:]}"
    return json.loads(lines[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("combo", list(COMBOS))
def test_quotas_from_real_instrumentation(stub: LLMStub, combo: str) -> None:
    modules, extra_env, expected, duplicates = COMBOS[combo]
    for module in ["openai", "anthropic", *modules]:
        require_module(module)
    app = combo.removesuffix("_latest").removesuffix("_sdk_off")
    result = _run([sys.executable, str(HERE / "llm_app.py"), app], _env(stub, extra_env))
    got = {
        config: (q["input"], q["output"], q["other"], q["ok"], q["failed"])
        for config, q in result["quotas"].items()
    }
    assert got == expected, json.dumps(result["spans"], indent=1)
    assert result["stats"]["duplicates"] == duplicates
    assert result["stats"]["skipped"] == 0
    assert result["stats"]["errors"] == 0
    if combo == "openai_v2_latest":  # the opt-in really changed the instrumentation's output
        assert all("opentelemetry.util.genai" in s for s in result["spans"]["stream"])
    if combo == "openllmetry_anthropic":  # two spans per call really were there
        assert len(result["spans"]["nonstream"]) == 4


def test_zero_code_under_opentelemetry_instrument(stub: LLMStub, tmp_path: Path) -> None:
    """``opentelemetry-instrument python app.py``: every installed instrumentor, no quota code."""
    for module in ("openai", "anthropic", "opentelemetry.instrumentation.auto_instrumentation"):
        require_module(module)
    launcher = Path(sys.executable).with_name("opentelemetry-instrument")
    if not launcher.exists():
        pytest.fail(f"{launcher} is missing: the test extra installs opentelemetry-instrumentation")
    config = {
        "quotas": [{"config_id": "openai", "limit": 40, "thresholds": [50]}],
        "rules": [
            {
                "config_id": "checkout-claude",
                "match": {"service.name": "zero-code-*", "provider": "anthropic"},
            }
        ],
        "handlers": [{"type": "alert_sink:make_sink", "label": "from-file"}],
        "monitor": {"interval_seconds": 30},
    }
    path = tmp_path / "quotas.json"
    path.write_text(json.dumps(config))
    env = _env(
        stub,
        {
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "zero-code-app",
            "OTEL_LLM_QUOTA_CONFIG_FILE": str(path),
            "OTEL_LLM_QUOTA_LIMITS": "anthropic=1000",
        },
    )
    env["PYTHONPATH"] = os.pathsep.join([str(HERE / "apps"), env["PYTHONPATH"]])
    result = _run([str(launcher), sys.executable, str(HERE / "apps" / "zero_code_app.py")], env)
    # Three instrumentations of openai (openai-v2, OpenLLMetry, OpenInference) and two spans per
    # Anthropic call are installed here: each call still counts once.
    assert result["quotas"] == {
        "openai": [22, 14, 0, 2],  # 36 of 40 tokens: crossed the 50% threshold
        "anthropic": [0, 0, 0, 0],  # created by OTEL_LLM_QUOTA_LIMITS; the rule took the call
        "checkout-claude": [13, 5, 0, 1],
    }
    assert result["alerts"] == [["from-file", "openai", 50.0, True]]
    assert result["monitoring"] is True
