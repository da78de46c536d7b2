"""Administrator commands on a store: ``set-limit``, ``reset``, ``delete``.

They act through a ``LLMProviderManager`` on the store, so every process using it sees the
change at its next sync.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from otel_llm_quota._validation import MAX_TOKENS
from otel_llm_quota.cli._app import CliError, cli, open_manager, refuse_memory_store, store_url
from otel_llm_quota.stores import redact_url

__all__ = ["delete", "parse_limit_argument", "reset", "set_limit"]

_STORE_OPTION = click.option(
    "--store", "store", metavar="URL", help="The store (else $OTEL_LLM_QUOTA_STORE)."
)
_PERIODS = ("hour", "day", "week", "month", "none")


def parse_limit_argument(text: str) -> int:
    """LIMIT as a token count in [0, 2**53], or a CliError naming LIMIT."""
    try:
        limit = int(text.replace("_", ""))
    except ValueError:
        raise CliError(f"LIMIT must be a whole number of tokens, not {text!r}") from None
    if limit < 0:
        raise CliError(f"LIMIT must be >= 0, got {limit}")
    if limit > MAX_TOKENS:
        raise CliError(f"LIMIT must be at most 2**53 ({MAX_TOKENS}), got {limit}")
    return limit


def _known(manager: Any, config_id: str, url: str) -> None:
    if manager.ledger.get(config_id) is None:
        raise CliError(f"unknown config id {config_id!r} in the store {redact_url(url)}")


@cli.command(
    "set-limit",
    # "-1" is a (bad) LIMIT, not an unknown option: let it reach parse_limit_argument.
    context_settings={"ignore_unknown_options": True},
)
@click.argument("config_id")
@click.argument("limit", required=False)
@click.option(
    "--usd",
    "usd",
    type=float,
    default=None,
    metavar="AMOUNT",
    help="A cost limit in USD per period, beside or instead of LIMIT (default: kept).",
)
@click.option(
    "--usd-threshold",
    "usd_thresholds",
    type=float,
    multiple=True,
    metavar="P",
    help="Alert threshold of the cost limit in percent; repeat for several (default: kept, or "
    "the token thresholds).",
)
@click.option(
    "--threshold",
    "thresholds",
    type=float,
    multiple=True,
    metavar="P",
    help="Alert threshold in percent, in (0, 100]; repeat for several (default: kept, or 80).",
)
@click.option(
    "--period",
    type=click.Choice(_PERIODS),
    default=None,
    help="When usage starts again from zero (default: kept, or month).",
)
@click.option("--timezone", metavar="TZ", default=None, help="IANA zone the periods align to.")
@click.option("--provider", metavar="NAME", default=None, help="The provider name to record.")
@_STORE_OPTION
def set_limit(
    config_id: str,
    limit: str | None,
    usd: float | None,
    usd_thresholds: tuple[float, ...],
    thresholds: tuple[float, ...],
    period: str | None,
    timezone: str | None,
    provider: str | None,
    store: str | None,
) -> None:
    """Set the token limit (LIMIT) and/or the cost limit (--usd) of CONFIG_ID (created if
    unknown) for every process on the store; the limit not given is kept."""
    if limit is None and usd is None:
        raise CliError("give LIMIT (tokens), --usd AMOUNT (a cost limit), or both")
    tokens = None if limit is None else parse_limit_argument(limit)
    url = store_url(store)
    refuse_memory_store(url)
    manager = open_manager(url)  # may create a SQLite file: limits may come before any app
    try:
        current = manager.ledger.get(config_id)
        options: dict[str, Any] = {}
        if tokens is None and current is not None:
            tokens = current.quota_limit
        if usd is not None:
            options["cost_limit_usd"] = usd
        elif current is not None and current.cost_limit_microusd is not None:
            options["cost_limit_usd"] = current.cost_limit_microusd / 1_000_000
        if usd_thresholds:
            options["cost_thresholds"] = usd_thresholds
        elif current is not None and current.cost_thresholds:
            options["cost_thresholds"] = current.cost_thresholds
        if thresholds:
            options["thresholds"] = thresholds
        elif current is not None:
            options["thresholds"] = current.thresholds
        if period is not None:
            options["period"] = None if period == "none" else period
        elif current is not None:
            options["period"] = current.period
        if timezone is not None:
            options["timezone"] = timezone
        elif current is not None:
            options["timezone"] = current.timezone
        if provider is not None:
            options["provider"] = provider
        if current is not None and current.parent is not None:
            options["parent"] = current.parent  # nested budgets: keep the link
        try:
            info = manager.set_quota_limit_sync(config_id, tokens, **options)
        except (TypeError, ValueError) as exc:
            raise CliError(str(exc)) from None
        if not manager.flush():
            raise CliError(f"the store {redact_url(url)} did not take the new limit")
    finally:
        manager.close()
    levels = ", ".join(f"{t:g}%" for t in info.thresholds)
    per = info.period or "ever"
    if info.quota_limit is not None:
        click.echo(f"{config_id}: limit {info.quota_limit:,} tokens per {per}, thresholds {levels}")
    if info.cost_limit_usd is not None:
        cost_levels = ", ".join(f"{t:g}%" for t in info.cost_thresholds)
        click.echo(
            f"{config_id}: cost limit {info.cost_limit_usd:,.2f} USD per {per}, "
            f"thresholds {cost_levels}"
        )


@cli.command()
@click.argument("config_id")
@_STORE_OPTION
def reset(config_id: str, store: str | None) -> None:
    """Start the current period's usage of CONFIG_ID from zero, fleet-wide."""
    url = store_url(store)
    manager = open_manager(url, must_exist=True)
    try:
        _known(manager, config_id, url)
        asyncio.run(manager.reset_quota_cache(config_id))
    finally:
        manager.close()
    click.echo(f"{config_id}: usage reset")


@cli.command()
@click.argument("config_id")
@_STORE_OPTION
def delete(config_id: str, store: str | None) -> None:
    """Remove CONFIG_ID (usage, limit, alert state) from the store."""
    url = store_url(store)
    manager = open_manager(url, must_exist=True)
    try:
        _known(manager, config_id, url)
        manager.delete_config_sync(config_id)
    finally:
        manager.close()
    click.echo(f"{config_id}: deleted")
