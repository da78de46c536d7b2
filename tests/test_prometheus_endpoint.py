"""start_prometheus_server reports through a registry of its own on every supported release of
opentelemetry-exporter-prometheus (0.64b0 takes ``registry=``; older ones register in
prometheus_client's global registry, from which the collector is moved). Also run by
``make unit-oldest`` against the extra's floor."""

from __future__ import annotations

import urllib.request

from prometheus_client import REGISTRY, generate_latest

from otel_llm_quota import LLMProviderManager, start_prometheus_server


def _names() -> set[str]:
    return {metric.name for metric in REGISTRY.collect()}


def test_the_endpoint_serves_quota_metrics_and_leaves_the_global_registry_alone() -> None:
    before = _names()
    manager = LLMProviderManager(metrics=False)
    try:
        manager.set_quota_limit_sync("openai-prod", 1000)
        manager.record_usage("openai-prod", input_tokens=250)
        endpoint = start_prometheus_server(manager, port=0, host="127.0.0.1")
        try:
            with urllib.request.urlopen(endpoint.url, timeout=10) as response:
                body = response.read().decode()
            assert 'llm_quota_usage{llm_quota_config_id="openai-prod"} 250.0' in body
            assert "otel_scope" not in body  # no scope labels
            assert "target_info" not in body
            assert b"llm_quota" not in generate_latest(REGISTRY)
        finally:
            endpoint.shutdown()
        assert _names() == before  # nothing left behind (process metrics change values)
    finally:
        manager.close()
