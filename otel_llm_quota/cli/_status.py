"""``otel-llm-quota status``: every config of a store as a table (or JSON), once or live."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import click
from rich import box
from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from otel_llm_quota._models import QuotaInfo
from otel_llm_quota.cli._app import CliError, cli, open_manager, store_url
from otel_llm_quota.stores import redact_url

__all__ = [
    "format_duration",
    "format_tokens",
    "render",
    "seconds_to_exhaustion",
    "status",
    "usage_colour",
]

_NONE = "—"
_sleep = time.sleep  # the pause of the --watch loop (the tests step it by hand)


def usage_colour(info: QuotaInfo) -> str:
    """green below the lowest threshold, yellow from it, red at 100 % or more."""
    percent = info.usage_percent
    if percent is None:
        return "white"
    if percent >= 100.0:
        return "red"
    if info.thresholds and percent >= min(info.thresholds):
        return "yellow"
    return "green"


def seconds_to_exhaustion(info: QuotaInfo, now: float) -> float | None:
    """Seconds until the limit is reached at this period's average rate (tokens used / seconds
    since the period started), 0 when it is reached, None without a limit or a rate."""
    remaining = info.quota_remaining
    if remaining is None:
        return None
    if remaining == 0:
        return 0.0
    if info.period_start is None or info.total_tokens <= 0:
        return None
    elapsed = now - info.period_start.timestamp()
    if elapsed <= 0:
        return None
    return remaining / (info.total_tokens / elapsed)


def format_duration(seconds: float | None) -> str:
    """``3d 4h``, ``2h 05m``, ``4m 10s``, ``12s``; ``—`` for None."""
    if seconds is None:
        return _NONE
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_tokens(count: int | None) -> str:
    """``950``, ``9,999``, ``12.3k``, ``4.5M``, ``7.0G``; ``—`` for None (keeps columns narrow)."""
    if count is None:
        return _NONE
    if count < 10_000:
        return f"{count:,}"
    for size, unit in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return f"{count:,}"  # pragma: no cover  (unreachable: count >= 10,000 here)


def _bar(info: QuotaInfo) -> RenderableType:
    if info.quota_limit is None:
        return Text(_NONE)
    limit = max(info.quota_limit, 1)
    return ProgressBar(
        total=limit,
        completed=min(info.total_tokens, limit),
        width=10,
        complete_style=usage_colour(info),
        finished_style=usage_colour(info),
    )


def _alert(info: QuotaInfo) -> Text:
    if info.alert_triggered:
        firing = []
        if info.alert_threshold is not None:
            firing.append(f"≥{info.alert_threshold:g}%")
        if info.cost_alert_threshold is not None:
            firing.append(f"cost ≥{info.cost_alert_threshold:g}%")
        return Text("firing " + " ".join(firing), style="bold red")
    return Text("ok", style="green")


def format_cost(info: QuotaInfo) -> str:
    """``$1.23/$50.00 (2.5%)``, ``$0.0042/—``, with ``+N unpriced`` requests when there are."""
    cost = info.cost_usd
    shown = f"${cost:,.2f}" if cost >= 1 or cost == 0 else f"${cost:.4f}"
    limit = info.cost_limit_usd
    text = f"{shown}/{_NONE if limit is None else f'${limit:,.2f}'}"
    percent = info.cost_usage_percent
    if percent is not None:
        text += f" ({percent:.1f}%)"
    if info.unpriced_requests:
        text += f" +{info.unpriced_requests:,} unpriced"
    return text


def render(infos: Sequence[QuotaInfo], url: str, now: float) -> RenderableType:
    """The status table of ``infos`` (or a line saying the store is empty)."""
    if not infos:
        return Text(f"No quotas in the store {redact_url(url)} yet.")
    table = Table(
        title=f"otel-llm-quota: {redact_url(url)}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    table.add_column("config", overflow="fold")
    table.add_column("usage", no_wrap=True)
    table.add_column("used/limit", justify="right")
    table.add_column("left", justify="right")
    table.add_column("%", justify="right", no_wrap=True)
    costs = any(
        i.cost_microusd or i.unpriced_requests or i.cost_limit_microusd is not None for i in infos
    )
    if costs:  # only when there is a cost to show
        table.add_column("cost USD/limit", justify="right")
    table.add_column("period, resets in")
    table.add_column("req (failed)", justify="right")
    table.add_column("alert, last sent")
    table.add_column("runs out in", justify="right")
    for info in infos:
        percent = info.usage_percent
        resets = (
            _NONE if info.reset_at is None else format_duration(info.reset_at.timestamp() - now)
        )
        last_alert = (
            _NONE
            if info.last_alert_sent is None
            else info.last_alert_sent.strftime("%m-%d %H:%M:%S")
        )
        exhaustion = seconds_to_exhaustion(info, now)
        cells: list[RenderableType] = [
            info.config_id if info.provider is None else f"{info.config_id} ({info.provider})",
            _bar(info),
            f"{format_tokens(info.total_tokens)}/{format_tokens(info.quota_limit)}",
            format_tokens(info.quota_remaining),
            Text(_NONE if percent is None else f"{percent:.1f}%", style=usage_colour(info)),
        ]
        if costs:
            cells.append(format_cost(info))
        table.add_row(
            *cells,
            f"{info.period or 'none'}, {resets}",
            f"{info.total_requests:,} ({info.failed_requests:,})",
            Text.assemble(_alert(info), f", {last_alert}"),
            "exhausted" if exhaustion == 0 else format_duration(exhaustion),
        )
    return table


@cli.command()
@click.option("--store", "store", metavar="URL", help="The store (else $OTEL_LLM_QUOTA_STORE).")
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print get_all_quota_statuses() as JSON.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    metavar="S",
    help="Seconds between two refreshes with --watch.",
)
def status(store: str | None, watch: bool, as_json: bool, interval: float) -> None:
    """Show every config of the store: usage, limits, periods, alerts."""
    if watch and as_json:
        raise CliError("--watch and --json cannot be used together")
    url = store_url(store)
    manager: Any = open_manager(url, flush_interval_seconds=interval)
    try:
        if as_json:
            click.echo(json.dumps(asyncio.run(manager.get_all_quota_statuses())))
            return
        console = Console()
        if not console.is_terminal:  # piped or in CI: wide enough not to wrap the table
            console = Console(width=max(console.width, 132))
        if not watch:
            console.print(render(manager.ledger.get_all(), url, time.time()))
            return
        try:
            with Live(render(manager.ledger.get_all(), url, time.time()), console=console) as live:
                while True:
                    _sleep(interval)
                    manager.flush()  # the fleet's totals as of now
                    live.update(render(manager.ledger.get_all(), url, time.time()))
        except KeyboardInterrupt:
            pass
    finally:
        manager.close()
