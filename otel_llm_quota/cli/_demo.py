"""``otel-llm-quota demo``: real ``openai`` calls, traced by openai-v2, filling four quotas.

What runs is what an application would run: the ``openai`` client, instrumented by the
OpenTelemetry ``openai-v2`` instrumentation, on a ``TracerProvider`` with a
``QuotaSpanProcessor``; a ``LLMProviderManager`` on an SQLite store with four configs, chosen by
``quota_config`` blocks and ``ConfigRule`` rules; its monitor thread calling two alert handlers
(a terminal line, and ``OTelLogEventHandler`` on a ``LoggerProvider`` with the console
exporter). The provider API is a loopback stub (``_demo_stub``) unless ``--base-url`` names a
real one (the key then comes from ``OPENAI_API_KEY``).

The script: 40 steps of four calls each (about 20 s); mid-run one limit is raised and one
config is reset, so two alerts resolve. ``--follow`` repeats it until Ctrl-C, each round
starting a new window (every config reset).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from otel_llm_quota._models import Alert, QuotaInfo
from otel_llm_quota.cli._app import CliError, cli
from otel_llm_quota.cli._status import format_tokens, usage_colour

__all__ = ["INSTALL_LINE", "STEPS", "demo", "missing_packages"]

INSTALL_LINE = "pip install 'otel-llm-quota[demo]'"
"""What to run when the demo's packages are missing."""

STEPS = 40
"""Steps of one round; each makes one call per workload."""

_DEFAULT_DURATION = 20.0
_ALERT_WAIT_SECONDS = 10.0  # the monitor wakes at a crossing: this is only a bound
_MAX_FAILURES = 3  # consecutive failed calls (a wrong key, an unreachable --base-url) end the demo

# module to import -> the distribution that provides it
_PACKAGES = {
    "openai": "openai",
    "httpx": "httpx",
    "opentelemetry.instrumentation.openai_v2": "opentelemetry-instrumentation-openai-v2",
}


def missing_packages() -> list[str]:
    """The distributions the demo needs that cannot be imported (none when all are there)."""
    missing = []
    for module, distribution in _PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    return missing


@dataclass(frozen=True, slots=True)
class _Config:
    config_id: str
    limit: int
    thresholds: tuple[float, ...]
    period: str
    routed_by: str


@dataclass(frozen=True, slots=True)
class _Workload:
    block: str | None  # the quota_config block it runs in (None: the rules choose)
    model: str
    prompt: str
    stream: bool = False


# Four configs, four ways of choosing one: two quota_config blocks, a model rule, a provider
# rule. Limits are sized so that, with the stub's usage, each crosses its thresholds at its own
# pace within a round.
_CONFIGS = (
    _Config("support-bot", 3_000, (50, 80, 100), "day", "quota_config block"),
    _Config("nightly-batch", 4_000, (25, 50, 75, 100), "hour", "quota_config block"),
    _Config("research-gpt-4o", 2_000, (80, 100), "month", "rule model=gpt-4o"),
    _Config("openai-shared", 4_000, (75, 90), "week", "rule provider=openai"),
)
_RAISED_LIMIT = ("research-gpt-4o", 6_000, 26)  # config, new limit, at step
_RESET = ("nightly-batch", 30)  # config, at step

_WORKLOADS = (
    _Workload("support-bot", "gpt-4o-mini", "Where is my order 1042 and when will it ship?", True),
    _Workload(
        "nightly-batch",
        "gpt-4o-mini",
        "Summarise this ticket thread in two sentences: the customer reports that the export "
        "button does nothing on large reports and asks for a workaround before the audit",
    ),
    _Workload(None, "gpt-4o", "Compare two caching strategies for an LLM gateway briefly."),
    _Workload(None, "gpt-4o-mini", "Suggest a title for a post about token quotas."),
)


def _rules() -> list[Any]:
    from otel_llm_quota import ConfigRule

    return [
        # gpt-4o itself, as asked for or as answered (gpt-4o-2024-08-06), not gpt-4o-mini
        ConfigRule("research-gpt-4o", provider="openai", model=["gpt-4o", "gpt-4o-20*"]),
        ConfigRule("openai-shared", provider="openai"),
    ]


class _Lines:
    """Lines for the screen from any thread (the alert handlers' threads, the log exporter),
    printed by the main thread between two steps."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Text] = queue.SimpleQueue()

    def put(self, line: Text) -> None:
        self._queue.put(line)

    def drain(self) -> Iterator[Text]:
        while True:
            try:
                yield self._queue.get_nowait()
            except queue.Empty:
                return


def _span_text(trace_id: int | None, span_id: int | None) -> str:
    if not trace_id or not span_id:
        return "(no span: not caused by a call)"
    return f"trace {trace_id:032x} span {span_id:016x}"


class _TerminalAlerts:
    """The demo's alert handler: one terminal line per notification (time, severity, config,
    threshold, usage, the span that crossed), then the same alert to ``OTelLogEventHandler``,
    whose record the console exporter writes just below (one handler, so the two stay together).
    """

    name = "demo-terminal"

    def __init__(self, lines: _Lines, log_events: Any) -> None:
        self._lines = lines
        self._log_events = log_events
        self._firing: set[str] = set()
        self._told = threading.Condition()

    def wait_firing(self, config_id: str, timeout_seconds: float) -> bool:
        """Wait until a firing alert of ``config_id`` has been shown; False on time-out."""
        with self._told:
            return self._told.wait_for(lambda: config_id in self._firing, timeout_seconds)

    def handle_alert(self, alert: Alert) -> None:
        _, severity = self._log_events.severity(alert)
        style = {"ERROR": "bold red", "WARN": "yellow"}.get(severity, "green")
        quota = alert.quota
        used = f"{format_tokens(quota.total_tokens)}/{format_tokens(quota.quota_limit)}"
        what = (
            f"crossed {alert.threshold_percent:g}%"
            if alert.is_firing
            else "resolved " + ", ".join(f"{t:g}%" for t in alert.thresholds)
        )
        span = alert.span
        self._lines.put(
            Text.assemble(
                (f"{datetime.now():%H:%M:%S} ", "dim"),
                (f"{severity:<5} ", style),
                (f"{alert.config_id:<16} ", "bold"),
                (f"{what:<20} ", style),
                f"{used:>13} tokens  ",
                (alert.reason.value, "dim"),
                ("" if span is None else "  " + _span_text(span.trace_id, span.span_id), "dim"),
            )
        )
        self._log_events.handle_alert(alert)
        with self._told:
            if alert.is_firing:
                self._firing.add(alert.config_id)
            else:
                self._firing.discard(alert.config_id)
            self._told.notify_all()


class _LogLineStream:
    """The console log exporter's ``out``: each record (one line, see ``_log_line``) goes to
    the screen between two steps instead of through the live view."""

    def __init__(self, lines: _Lines) -> None:
        self._lines = lines

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line:
                self._lines.put(Text(line, style="cyan"))
        return len(text)

    def flush(self) -> None:
        pass


def _log_line(record: Any) -> str:
    """One console-exporter line per log record: event, severity, body, the linked span."""
    log = record.log_record
    return (
        f"         └ OTel log event {log.event_name} {log.severity_text}: {log.body}  "
        f"{_span_text(log.trace_id, log.span_id)}\n"
    )


def _console_exporter(log_export: Any) -> Any:
    """The SDK's console log exporter: ``ConsoleLogRecordExporter``, or its older name."""
    return getattr(log_export, "ConsoleLogRecordExporter", None) or log_export.ConsoleLogExporter


def _render(infos: dict[str, QuotaInfo], header: str, footer: str, width: int) -> RenderableType:
    """The quotas as a table of bars; "routed by" and "thresholds" only on a wide screen."""
    wide = width >= 130
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), title=header, title_justify="left")
    table.add_column("config", no_wrap=True)
    if wide:
        table.add_column("routed by", style="dim", no_wrap=True)
    table.add_column("usage", no_wrap=True)
    table.add_column("used/limit", justify="right", no_wrap=True)
    table.add_column("%", justify="right", no_wrap=True)
    table.add_column("period", no_wrap=True)
    if wide:
        table.add_column("thresholds", no_wrap=True)
    table.add_column("alert", no_wrap=True)
    for config in _CONFIGS:
        info = infos.get(config.config_id)
        if info is None:
            continue
        limit = max(info.quota_limit or 1, 1)
        bar = ProgressBar(
            total=limit,
            completed=min(info.total_tokens, limit),
            width=20 if wide else 16,
            complete_style=usage_colour(info),
            finished_style=usage_colour(info),
        )
        alert = (
            Text(f"firing ≥{info.alert_threshold:g}%", style="bold red")
            if info.alert_triggered
            else Text("ok", style="green")
        )
        cells: list[RenderableType] = [config.config_id]
        if wide:
            cells.append(config.routed_by)
        cells += [
            bar,
            f"{format_tokens(info.total_tokens)}/{format_tokens(info.quota_limit)}",
            Text(f"{info.usage_percent or 0.0:.0f}%", style=usage_colour(info)),
            info.period or "none",
        ]
        if wide:
            cells.append(" ".join(f"{t:g}%" for t in info.thresholds))
        cells.append(alert)
        table.add_row(*cells)
    return Group(table, Text(footer, style="dim"))


def _progress_line(infos: dict[str, QuotaInfo], step: int) -> str:
    parts = [
        f"{c.config_id} {infos[c.config_id].usage_percent or 0:.0f}%"
        for c in _CONFIGS
        if c.config_id in infos
    ]
    return f"step {step}/{STEPS}: " + ", ".join(parts)


def _store_path(given: str | None) -> Path:
    if given is None:
        return Path(tempfile.mkdtemp(prefix="otel-llm-quota-demo-")) / "demo.db"
    path = Path(given).expanduser().resolve()
    if path.exists():
        raise CliError(f"--store {path} exists already: the demo starts from an empty store")
    if not path.parent.is_dir():
        raise CliError(f"--store {path}: no directory {path.parent}")
    return path


@cli.command()
@click.option(
    "--store",
    "store",
    metavar="PATH",
    default=None,
    help="The SQLite file to create (default: demo.db in a new temporary directory, kept).",
)
@click.option(
    "--base-url",
    metavar="URL",
    default=None,
    help="A real OpenAI-compatible API (key from $OPENAI_API_KEY) instead of the loopback stub.",
)
@click.option("--follow", is_flag=True, help="Repeat rounds (a new window each) until Ctrl-C.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0.0),
    default=_DEFAULT_DURATION,
    hidden=True,  # for the tests: the same run, faster
    help="Seconds one round takes.",
)
def demo(store: str | None, base_url: str | None, follow: bool, duration: float) -> None:
    """Watch quotas fill up: real openai calls, traced by OpenTelemetry, against a local stub."""
    missing = missing_packages()
    if missing:
        raise CliError(f"the demo needs {', '.join(missing)}: {INSTALL_LINE}")
    api_key = "sk-demo-stub"  # the stub needs none; never send the user's key to it
    if base_url is not None:
        api_key = os.environ.get("OPENAI_API_KEY", "").strip()
        if not api_key:
            raise CliError("--base-url needs a key in OPENAI_API_KEY")
    path = _store_path(store)
    url = f"sqlite:///{path}"
    console = Console()
    if not console.is_terminal:  # piped or in CI: plain lines, wide enough not to wrap the table
        console = Console(width=max(console.width, 132))
    with ExitStack() as stack:
        from otel_llm_quota.cli._demo_stub import DemoStub

        stub = None if base_url is not None else stack.enter_context(DemoStub())
        target = stub.base_url if stub is not None else str(base_url)
        _Run(console, url, target, api_key, stub, duration, follow).run()
    console.print(Text.assemble("Store: ", (url, "bold")), soft_wrap=True)
    console.print(
        Text.assemble("Look at it with:  ", (f"otel-llm-quota status --store {url}", "bold")),
        soft_wrap=True,
    )


class _Run:
    """One demo: set-up, the rounds, the teardown (in that order, whatever happens)."""

    def __init__(
        self,
        console: Console,
        url: str,
        target: str,
        api_key: str,
        stub: Any,
        duration: float,
        follow: bool,
    ) -> None:
        self.console = console
        self.url = url
        self.target = target
        self.api_key = api_key
        self.stub = stub
        self.step_seconds = duration / STEPS
        self.follow = follow
        self.lines = _Lines()
        self.requests = 0
        self.failures = 0
        self.streak = 0  # consecutive failed calls

    def run(self) -> None:
        import openai
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs import export as log_export
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        from otel_llm_quota import LLMProviderManager, QuotaSpanProcessor
        from otel_llm_quota.handlers import OTelLogEventHandler

        resource = Resource.create({"service.name": "otel-llm-quota-demo"})
        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        out: IO[str] = _LogLineStream(self.lines)  # type: ignore[assignment]  # write/flush is all it uses
        logger_provider.add_log_record_processor(
            log_export.SimpleLogRecordProcessor(
                _console_exporter(log_export)(out=out, formatter=_log_line)
            )
        )
        manager = LLMProviderManager(
            store=self.url,
            flush_interval_seconds=0.5,
            cooldown_seconds=3600,
            metrics=False,
        )
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        tracer_provider.add_span_processor(QuotaSpanProcessor(manager, rules=_rules()))
        instrumentor = OpenAIInstrumentor()  # type: ignore[no-untyped-call]  # untyped package
        instrumentor.instrument(tracer_provider=tracer_provider)
        client = openai.OpenAI(
            base_url=self.target,
            api_key=self.api_key,
            max_retries=0 if self.stub is not None else 2,
            timeout=30.0,
        )
        self.alerts = _TerminalAlerts(self.lines, OTelLogEventHandler(logger_provider))
        try:
            self._set_limits(manager)
            manager.add_alert_handler(self.alerts)
            manager.start_monitoring_thread(interval=0.5)
            self._rounds(manager, client)
        finally:
            client.close()
            manager.close()  # the final pass delivers what is pending, the store gets the rest
            instrumentor.uninstrument()
            tracer_provider.shutdown()
            logger_provider.shutdown()
            self._print_lines(self.console)
        infos = {i.config_id: i for i in manager.ledger.get_all()}
        self.console.print(
            _render(infos, "Final state", self._footer(), self.console.width), soft_wrap=True
        )

    def _set_limits(self, manager: Any) -> None:
        for config in _CONFIGS:
            manager.set_quota_limit_sync(
                config.config_id,
                config.limit,
                thresholds=config.thresholds,
                period=config.period,
                provider="openai",
            )

    def _footer(self) -> str:
        billed = ""
        if self.stub is not None:
            b = self.stub.billed()
            billed = (
                f"; the stub billed {b.requests:,} requests, {b.total_tokens:,} tokens "
                f"({b.prompt_tokens:,} in, {b.completion_tokens:,} out)"
            )
        failed = f", {self.failures} failed" if self.failures else ""
        return f"{self.requests:,} calls{failed}{billed}"

    def _print_lines(self, console: Console) -> None:
        for line in self.lines.drain():
            console.print(line, soft_wrap=True)

    def _rounds(self, manager: Any, client: Any) -> None:
        live_view = self.console.is_terminal
        header = f"otel-llm-quota demo: openai client → {self.target}, store {self.url}"
        self.console.print(Text(header, style="bold"), soft_wrap=True)
        if not live_view:
            self.console.print("Alerts appear as they fire; the final state follows.")
        round_number = 1
        screen: AbstractContextManager[Any] = (
            Live(console=self.console, refresh_per_second=8, transient=True)
            if live_view
            else nullcontext()
        )
        try:
            with screen as live:
                while True:
                    if round_number > 1:
                        self._new_round(manager, round_number)
                    for step in range(1, STEPS + 1):
                        started = time.monotonic()
                        self._step(manager, client, step)
                        infos = {i.config_id: i for i in manager.ledger.get_all()}
                        if live is not None:
                            self._print_lines(live.console)
                            live.update(
                                _render(
                                    infos,
                                    f"round {round_number}, step {step}/{STEPS}",
                                    self._footer() + ("  (Ctrl-C to stop)" if self.follow else ""),
                                    self.console.width,
                                )
                            )
                        else:
                            self._print_lines(self.console)
                            if step % 10 == 0:
                                self.console.print(_progress_line(infos, step), soft_wrap=True)
                        _pause(self.step_seconds - (time.monotonic() - started))
                    if not self.follow:
                        return
                    round_number += 1
        except KeyboardInterrupt:
            self.console.print("Stopped.")

    def _new_round(self, manager: Any, round_number: int) -> None:
        """A new window for every config, as a period boundary would start one."""
        self.lines.put(Text(f"round {round_number}: every config starts a new window", "bold"))
        for config in _CONFIGS:  # first: the old window's alerts resolve with it
            asyncio.run(manager.reset_quota_cache(config.config_id))
        self._set_limits(manager)  # the raised limit back to where it started

    def _step(self, manager: Any, client: Any, step: int) -> None:
        from otel_llm_quota import quota_config

        config_id, raised, at = _RAISED_LIMIT
        if step == at:
            info = manager.ledger.get(config_id)
            self._shown_firing(info)
            manager.set_quota_limit_sync(
                config_id,
                raised,
                thresholds=info.thresholds,
                period=info.period,
                provider=info.provider,
            )
            self.lines.put(Text(f"{config_id}: limit raised to {raised:,} tokens", "bold"))
        reset_id, reset_at = _RESET
        if step == reset_at:
            self._shown_firing(manager.ledger.get(reset_id))
            asyncio.run(manager.reset_quota_cache(reset_id))
            self.lines.put(Text(f"{reset_id}: usage reset (a new window)", "bold"))
        for workload in _WORKLOADS:
            block = nullcontext() if workload.block is None else quota_config(workload.block)
            with block:
                self._call(client, workload)

    def _shown_firing(self, info: QuotaInfo) -> None:
        """Before a change that resolves the alert of ``info``'s config: wait (a little) until
        its firing alert is on the screen, however fast the script runs, so both are seen."""
        percent = info.usage_percent
        if percent is not None and info.thresholds and percent >= min(info.thresholds):
            self.alerts.wait_firing(info.config_id, _ALERT_WAIT_SECONDS)

    def _call(self, client: Any, workload: _Workload) -> None:
        import openai

        messages = [{"role": "user", "content": workload.prompt}]
        self.requests += 1
        try:
            if workload.stream:
                chunks = client.chat.completions.create(
                    model=workload.model,
                    messages=messages,
                    max_tokens=96,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                for _ in chunks:
                    pass
            else:
                client.chat.completions.create(
                    model=workload.model, messages=messages, max_tokens=96
                )
        except openai.APIError as exc:
            self.failures += 1
            self.lines.put(Text(f"call failed: {type(exc).__name__}: {exc}", style="red"))
            self.streak += 1
            if self.streak >= _MAX_FAILURES:
                raise CliError(
                    f"{self.streak} calls in a row to {self.target} failed: {exc}"
                ) from None
            return
        self.streak = 0


def _pause(seconds: float) -> None:
    """The pace of the script (one step per ``duration / STEPS`` seconds)."""
    if seconds > 0:
        time.sleep(seconds)
