"""A complete tour of the quota API: limits, usage, alerts, status, reset. Finishes in seconds.

Run it with ``make venv && .venv/bin/python examples/quota_monitoring_example.py``.
"""

from __future__ import annotations

import asyncio
import json

from otel_llm_quota import Alert, LLMProviderManager, QuotaInfo


async def quota_alert_handler(config_id: str, quota: QuotaInfo) -> None:
    """A seed-style handler: it receives the config id and a QuotaInfo snapshot."""
    assert quota.quota_limit is not None
    usage_percent = (quota.total_tokens / quota.quota_limit) * 100
    state = quota.alert_state.value if quota.alert_state else "-"
    print(
        f"Alert: {config_id} at {usage_percent:.1f}% quota usage "
        f"({state}, threshold {quota.alert_threshold}%)"
    )


class AuditTrail:
    """A handler object: ``handle_alert`` receives the full Alert (reason, fingerprint, span)."""

    name = "audit-trail"

    def __init__(self) -> None:
        self.seen: list[Alert] = []
        self.arrivals: asyncio.Queue[Alert] = asyncio.Queue()

    async def handle_alert(self, alert: Alert) -> None:  # async: runs on the event loop
        self.seen.append(alert)
        self.arrivals.put_nowait(alert)

    async def next(self, timeout: float = 5.0) -> Alert:
        """Wait (bounded) for the next alert; the monitor delivers it within milliseconds."""
        return await asyncio.wait_for(self.arrivals.get(), timeout)


async def main() -> None:
    audit = AuditTrail()
    async with LLMProviderManager(cooldown_seconds=3600) as manager:
        manager.add_alert_handler(quota_alert_handler)
        manager.add_alert_handler(audit)

        await manager.set_quota_limit(
            config_id="openai-prod", quota_limit=100_000, alert_threshold_percent=80.0
        )
        await manager.set_quota_limit(
            config_id="anthropic-dev",
            quota_limit=20_000,
            thresholds=(50, 80, 95, 100),
            period="day",
            provider="anthropic",
        )
        await manager.start_monitoring(interval=60)

        # The app (or the span processor) reports usage after each LLM call.
        for _ in range(10):
            await manager.update_quota_usage(
                config_id="openai-prod", provider="openai", tokens_used=1500, success=True
            )
        await manager.update_quota_usage("openai-prod", "openai", tokens_used=0, success=False)
        # Crossing a threshold wakes the monitor at once, not after the 60 s interval.
        manager.record_usage("anthropic-dev", input_tokens=9_000, output_tokens=2_500)
        await audit.next()
        manager.record_usage("anthropic-dev", input_tokens=6_000, output_tokens=1_000)
        await audit.next()

        status = await manager.get_quota_status("openai-prod")
        print("openai-prod status:", json.dumps(status, indent=2))
        for item in await manager.get_all_quota_statuses():
            print(
                f"{item['config_id']:>14}: {item['total_tokens']:>6} / {item['quota_limit']}"
                f" tokens ({item['usage_percent']:.1f}%), resets {item['reset_at']}"
            )

        quota = await manager.get_quota_usage("anthropic-dev")
        assert quota is not None
        print(
            f"anthropic-dev: {quota.input_tokens} in + {quota.output_tokens} out,"
            f" {quota.quota_remaining} left, alert {quota.alert_state and quota.alert_state.value}"
        )

        # Resetting the usage resolves the firing alert.
        await manager.reset_quota_cache("anthropic-dev")
        await audit.next()
        print(
            "alerts:",
            [(a.config_id, a.state.value, a.threshold_percent, a.reason.value) for a in audit.seen],
        )

        manager.remove_alert_handler(quota_alert_handler)
        await manager.stop_monitoring()
        print("monitoring:", manager.monitoring)


if __name__ == "__main__":
    asyncio.run(main())
