"""A plain app with no OpenTelemetry or quota code of its own, run under opentelemetry-instrument.

It calls OpenAI (twice: plain and streamed) and Anthropic once against the loopback stub, waits
for the alert the config file's handler should receive, and prints the quotas as JSON.
"""

from __future__ import annotations

import json
import os

import alert_sink
import anthropic
import openai

import otel_llm_quota

port = int(os.environ["LLM_STUB_PORT"])
messages = [{"role": "user", "content": "Say hello"}]
with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0) as c:
    c.chat.completions.create(model="gpt-4o-mini", messages=messages)
    for _ in c.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    ):
        pass
with anthropic.Anthropic(
    base_url=f"http://127.0.0.1:{port}", api_key="sk-ant-test", max_retries=0
) as c:
    c.messages.create(model="claude-3-5-haiku-latest", max_tokens=64, messages=messages)

alerted = alert_sink.received.wait(timeout=30)
manager = otel_llm_quota.get_manager()
print(
    json.dumps(
        {
            "quotas": {
                q.config_id: [q.input_tokens, q.output_tokens, q.other_tokens, q.total_requests]
                for q in manager.ledger.get_all()
            },
            "alerts": [
                (label, a.config_id, a.threshold_percent, a.span is not None)
                for label, a in alert_sink.alerts
            ]
            if alerted
            else [],
            "monitoring": manager.monitoring,
        }
    )
)
