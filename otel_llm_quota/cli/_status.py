"""``otel-llm-quota status``: every config of a store as a table (or JSON), once or live.

The one-off table is written as plain lines, a chunk at a time, so the first rows of a large
store appear at once and 10,000 configs take a fraction of a second: rich's ``Table`` measures
and wraps every cell (about 2 ms a row, 20 s for 10,000 configs), which is worth it only for the
few rows of a live view. Colours come from rich (its ``Style`` and the console's colour
detection: ``NO_COLOR``, ``FORCE_COLOR``, a pipe), the layout is fixed-width columns.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from otel_llm_quota._forecast import burn_rate, window_for
from otel_llm_quota._models import QuotaInfo
from otel_llm_quota.cli._app import CliError, cli, open_manager, store_url
from otel_llm_quota.stores import redact_url

if TYPE_CHECKING:  # rich is imported where it runs: `--json` and the other commands need none
    from rich.console import Console, RenderableType
    from rich.style import Style
    from rich.text import Text

__all__ = [
    "format_duration",
    "format_tokens",
    "render",
    "render_watch",
    "seconds_to_exhaustion",
    "status",
    "table_lines",
    "usage_colour",
    "watch_rows",
]

_NONE = "—"
_sleep = time.sleep  # the pause of the --watch loop (the tests step it by hand)
_CHUNK_ROWS = 200  # rows written (and flushed) at a time by the one-off table
_WATCH_MIN_ROWS = 5  # a live view shows at least this many configs, however small the terminal
_WATCH_CHROME_LINES = 7  # title, header, rule, note, summary and a margin: not rows

_HEADERS = (
    "config",
    "usage",
    "used/limit",
    "left",
    "%",
    "period, resets in",
    "req (failed)",
    "alert, last sent",
    "runs out in",
)
_RIGHT = frozenset({2, 3, 4, 6, 8})  # right-justified columns (numbers)
_COST_HEADER = "cost USD/limit"
_COST_COLUMN = 5  # where the cost column goes when there is a cost to show


def _has_costs(infos: Sequence[QuotaInfo]) -> bool:
    """Whether the table shows the cost column: only when there is a cost to show."""
    return any(
        i.cost_microusd or i.unpriced_requests or i.cost_limit_microusd is not None for i in infos
    )


def _columns(costs: bool) -> tuple[tuple[str, ...], frozenset[int]]:
    """The headers and right-justified columns, with the cost column or without it."""
    if not costs:
        return _HEADERS, _RIGHT
    at = _COST_COLUMN
    headers = (*_HEADERS[:at], _COST_HEADER, *_HEADERS[at:])
    return headers, frozenset(
        {*(i for i in _RIGHT if i < at), at, *(i + 1 for i in _RIGHT if i >= at)}
    )


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
    """Seconds until a limit is reached at the burn rate of ``time_to_exhaustion`` (the
    estimator of ``otel_llm_quota._forecast``; from a store alone, without the monitor's
    samples, that is the period's average rate): the sooner of the token limit and the cost
    limit, 0 when one is reached, None without a limit or a rate."""
    found = [
        seconds
        for seconds in (
            _exhaustion(info, info.quota_limit, info.total_tokens, now),
            _exhaustion(info, info.cost_limit_microusd, info.cost_microusd, now),
        )
        if seconds is not None
    ]
    return min(found) if found else None


def _exhaustion(info: QuotaInfo, limit: int | None, used: int, now: float) -> float | None:
    if limit is None:
        return None
    if used >= limit:
        return 0.0
    if info.period_start is None or used <= 0:
        return None
    start = info.period_start.timestamp()
    end = math.inf if info.reset_at is None else info.reset_at.timestamp()
    rate = burn_rate(None, start, now, used, window_for(start, end, None))
    if not rate:
        return None
    return (limit - used) / rate


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


def _label(info: QuotaInfo) -> str:
    name = info.config_id if info.provider is None else f"{info.config_id} ({info.provider})"
    if info.parent is not None:  # nested budgets: the level it counts toward too
        name += f" ⊂ {info.parent}"
    return name


def _cells(info: QuotaInfo, now: float) -> tuple[str, str, str, str, str, str, str, str]:
    """The plain text of every column but the bar, for one config."""
    percent = info.usage_percent
    resets = _NONE if info.reset_at is None else format_duration(info.reset_at.timestamp() - now)
    last_alert = (
        _NONE if info.last_alert_sent is None else info.last_alert_sent.strftime("%m-%d %H:%M:%S")
    )
    alert = _firing(info) if info.alert_triggered else "ok"
    return (
        _label(info),
        f"{format_tokens(info.total_tokens)}/{format_tokens(info.quota_limit)}",
        format_tokens(info.quota_remaining),
        _NONE if percent is None else f"{percent:.1f}%",
        f"{info.period or 'none'}, {resets}",
        f"{info.total_requests:,} ({info.failed_requests:,})",
        f"{alert}, {last_alert}",
        _runs_out(info, now),
    )


def _runs_out(info: QuotaInfo, now: float) -> str:
    """``exhausted``, the time to exhaustion, ``after reset`` when the period resets first (usage
    starts again from zero then), ``>999d``, or ``—`` (see ``seconds_to_exhaustion``)."""
    exhaustion = seconds_to_exhaustion(info, now)
    if exhaustion is None:
        return _NONE
    if exhaustion == 0:
        return "exhausted"
    if info.reset_at is not None and now + exhaustion >= info.reset_at.timestamp():
        return "after reset"
    if exhaustion >= 1000 * 86400:
        return ">999d"
    return format_duration(exhaustion)


def _bar(info: QuotaInfo) -> RenderableType:
    from rich.progress_bar import ProgressBar
    from rich.text import Text

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


def _firing(info: QuotaInfo) -> str:
    """``firing ≥80%``, ``firing cost ≥100%``, ``firing ≥80% cost ≥100%``: which limits fire."""
    firing = ["firing"]
    if info.alert_threshold is not None:
        firing.append(f"≥{info.alert_threshold:g}%")
    if info.cost_alert_threshold is not None:
        firing.append(f"cost ≥{info.cost_alert_threshold:g}%")
    return " ".join(firing)


def _alert(info: QuotaInfo) -> Text:
    from rich.text import Text

    if info.alert_triggered:
        return Text(_firing(info), style="bold red")
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


def _title(url: str, shown: int, total: int) -> str:
    configs = f"{total:,} config" + ("" if total == 1 else "s")
    if shown < total:
        return f"otel-llm-quota: {redact_url(url)} ({configs}, showing {shown:,})"
    return f"otel-llm-quota: {redact_url(url)} ({configs})"


def render(
    infos: Sequence[QuotaInfo], url: str, now: float, total: int | None = None
) -> RenderableType:
    """The status table of ``infos`` as a rich renderable (or a line saying the store is empty).

    For a few rows (the live view): rich measures every cell. ``total`` is how many configs the
    store has when ``infos`` are only some of them.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not infos:
        return Text(f"No quotas in the store {redact_url(url)} yet.")
    table = Table(
        title=_title(url, len(infos), len(infos) if total is None else total),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    costs = _has_costs(infos)
    headers, right = _columns(costs)
    for i, header in enumerate(headers):
        table.add_column(
            header,
            justify="right" if i in right else "left",
            no_wrap=header in ("usage", "%"),
            overflow="fold" if header == "config" else "ellipsis",
        )
    for info in infos:
        label, used, left, percent, period, requests, alert, runs_out = _cells(info, now)
        last_alert = alert.partition(", ")[2]
        cost_cells = [format_cost(info)] if costs else []
        table.add_row(
            label,
            _bar(info),
            used,
            left,
            Text(percent, style=usage_colour(info)),
            *cost_cells,
            period,
            requests,
            Text.assemble(_alert(info), f", {last_alert}"),
            runs_out,
        )
    return table


def watch_rows(infos: Sequence[QuotaInfo], rows: int) -> list[QuotaInfo]:
    """What a live view of ``rows`` lines shows: every config in the store's order if they fit,
    else the ``rows`` with the highest usage (percent of the limit, then tokens) first."""
    if len(infos) <= rows:
        return list(infos)

    def key(info: QuotaInfo) -> tuple[float, int]:
        percent = info.usage_percent
        return (-1.0 if percent is None else percent, info.total_tokens)

    return heapq.nlargest(rows, infos, key=key)


def render_watch(infos: Sequence[QuotaInfo], url: str, now: float, rows: int) -> RenderableType:
    """One frame of ``status --watch``: at most ``rows`` configs (see ``watch_rows``), with a
    note and a fleet summary when some are left out."""
    shown = watch_rows(infos, rows)
    table = render(shown, url, now, total=len(infos))
    if len(shown) == len(infos):
        return table
    firing = sum(1 for info in infos if info.alert_triggered)
    exhausted = sum(1 for info in infos if info.quota_remaining == 0)
    from rich.console import Group
    from rich.text import Text

    note = Text(
        f"The {len(shown):,} configs with the highest usage of {len(infos):,} "
        f"({firing:,} firing, {exhausted:,} exhausted); `status` without --watch lists "
        "them all, `status --json` too.",
        style="dim",
    )
    return Group(table, note)


class _Styler:
    """ANSI styling of plain text with the console's colour system (none: the text itself)."""

    def __init__(self, console: Console) -> None:
        from rich.console import COLOR_SYSTEMS

        name = None if console.no_color else console.color_system
        self.color_system = None if name is None else COLOR_SYSTEMS[name]
        self._styles: dict[str, Style] = {}

    def __call__(self, text: str, style: str) -> str:
        if self.color_system is None or not text:
            return text
        parsed = self._styles.get(style)
        if parsed is None:
            from rich.style import Style

            parsed = self._styles[style] = Style.parse(style)
        return parsed.render(text, color_system=self.color_system)


def _tokens_width(largest: int | None) -> int:
    """The widest ``format_tokens`` of any count up to ``largest``: ``999.9k`` (6) below a
    thousand G, else that of ``largest`` itself (``format_tokens`` is monotonic from 1 G)."""
    return max(6, len(format_tokens(largest or 0)))


def _widths(infos: Sequence[QuotaInfo], costs: bool = False) -> list[int]:
    """Column widths that fit every row, from a few maxima (no cell is formatted for this but
    the cost column's, when there is one)."""
    limits = [i.quota_limit for i in infos if i.quota_limit is not None]
    used = _tokens_width(max(i.total_tokens for i in infos))
    limit = _tokens_width(max(limits)) if limits else 1
    percents = [p for p in (i.usage_percent for i in infos) if p is not None]
    requests = len(f"{max(i.total_requests for i in infos):,}")
    failed = len(f"{max(i.failed_requests for i in infos):,}")
    if any(i.cost_alert_threshold is not None for i in infos):
        alert = len("firing ≥100% cost ≥100%, 12-31 23:59:59")
    elif any(i.alert_triggered for i in infos):
        alert = len("firing ≥100%, 12-31 23:59:59")
    else:
        alert = len("ok, 12-31 23:59:59") if any(i.last_alert_sent for i in infos) else 5
    cells: tuple[int, ...] = (
        max(len(_label(i)) for i in infos),
        10,
        used + 1 + limit,
        limit,
        len(f"{max(percents):.1f}%") if percents else 1,
        len("month, 31d 23h"),
        requests + 3 + failed,
        alert,
        len("after reset"),
    )
    headers, _ = _columns(costs)
    if costs:
        cost = max(len(format_cost(i)) for i in infos)
        cells = (*cells[:_COST_COLUMN], cost, *cells[_COST_COLUMN:])
    return [max(len(header), cell) for header, cell in zip(headers, cells, strict=True)]


def table_lines(
    infos: Sequence[QuotaInfo],
    url: str,
    now: float,
    *,
    console: Console,
    max_width: int | None = None,
) -> Iterator[str]:
    """The one-off status table as lines of text (ANSI-styled for a colour terminal).

    Column widths come from a few maxima over the rows (``_widths``), so each row is formatted
    only when its line is asked for: the first lines of 10,000 configs come at once.
    ``max_width`` (a terminal's) shortens long config ids (to 12 characters at least) when
    that makes the lines fit.
    """
    style = _Styler(console)
    unicode = console.encoding.lower().startswith("utf")
    full, empty, rule = ("█", "░", "─") if unicode else ("#", "-", "-")
    costs = _has_costs(infos)
    headers, right = _columns(costs)
    widths = _widths(infos, costs)
    alert_column = len(headers) - 2
    gap = "  "
    if max_width is not None:
        rest = sum(widths[1:]) + len(gap) * (len(widths) - 1)
        if max_width - rest >= 12:  # else the lines wrap anyway: keep the ids whole
            widths[0] = min(widths[0], max_width - rest)

    def pad(text: str, column: int) -> str:
        width = widths[column]
        if len(text) > width:
            text = text[: width - 1] + "…" if unicode else text[:width]
        return text.rjust(width) if column in right else text.ljust(width)

    yield style(_title(url, len(infos), len(infos)), "italic")
    yield gap.join(style(pad(h, i), "bold") for i, h in enumerate(headers))
    yield style(rule * (sum(widths) + len(gap) * (len(widths) - 1)), "dim")
    for info in infos:
        label, used, left, percent, period, requests, alert, runs_out = _cells(info, now)
        colour = usage_colour(info)
        if info.quota_limit is None:
            bar = pad(_NONE, 1)
        else:
            filled = min(int(10 * info.total_tokens / max(info.quota_limit, 1)), 10)
            bar = style(full * filled, colour) + style(empty * (10 - filled), "bright_black")
        state, _, last = alert.partition(", ")
        alert_cell = style(state, "bold red" if info.alert_triggered else "green")
        alert_cell += f", {last}".ljust(widths[alert_column] - len(state))
        cells = [pad(label, 0), bar, pad(used, 2), pad(left, 3), style(pad(percent, 4), colour)]
        if costs:
            cells.append(pad(format_cost(info), _COST_COLUMN))
        at = len(cells)
        cells += (pad(period, at), pad(requests, at + 1), alert_cell, pad(runs_out, at + 3))
        yield gap.join(cells).rstrip()


def _chunks(lines: Iterable[str], size: int) -> Iterator[str]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield "\n".join(chunk) + "\n"
            chunk = []
    if chunk:
        yield "\n".join(chunk) + "\n"


@cli.command()
@click.option("--store", "store", metavar="URL", help="The store (else $OTEL_LLM_QUOTA_STORE).")
@click.option(
    "--watch",
    is_flag=True,
    help="Refresh in place until Ctrl-C (the configs with the highest usage when they do not "
    "all fit the terminal).",
)
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
    # The refreshes of --watch are explicit (one per interval); no background sync besides.
    manager: Any = open_manager(
        url, flush_interval_seconds=max(interval * 10, 3600.0), must_exist=True
    )
    try:
        if as_json:
            click.echo(json.dumps(asyncio.run(manager.get_all_quota_statuses())))
            return
        from rich.console import Console

        console = Console()
        if not watch:
            _print_table(console, manager.ledger.get_all(), url)
            return
        if not console.is_terminal:  # piped or in CI: wide enough not to wrap the table
            console = Console(width=max(console.width, 132))
        _watch(console, manager, url, interval)
    finally:
        manager.close()


def _print_table(console: Console, infos: Sequence[QuotaInfo], url: str) -> None:
    if not infos:
        click.echo(f"No quotas in the store {redact_url(url)} yet.")
        return
    width = console.width if console.is_terminal else None
    colour = console.color_system is not None and not console.no_color
    lines = table_lines(infos, url, time.time(), console=console, max_width=width)
    try:
        for chunk in _chunks(lines, _CHUNK_ROWS):
            click.echo(chunk, nl=False, color=colour)
    except BrokenPipeError:  # `status | head`: the reader has what it wanted
        # Nothing more reaches the pipe, not even the interpreter's final flush of stdout.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _watch(console: Console, manager: Any, url: str, interval: float) -> None:
    from rich.live import Live

    def frame() -> RenderableType:
        rows = max(console.size.height - _WATCH_CHROME_LINES, _WATCH_MIN_ROWS)
        return render_watch(manager.ledger.get_all(), url, time.time(), rows)

    try:
        with Live(frame(), console=console, auto_refresh=False) as live:
            while True:
                _sleep(interval)
                manager.flush()  # the fleet's totals as of now
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass
