"""``otel-llm-quota doctor``: what to run when nothing is counted.

It looks at what ``opentelemetry-instrument`` would do in this environment and at what the quota
configuration says, and prints each finding with the fix:

* the LLM client libraries installed, with their versions;
* each LLM instrumentation (``opentelemetry_instrumentor`` entry points): would it be activated?
  The dependency check of the auto-instrumentation (``opentelemetry.instrumentation.dependencies``)
  is run and the entry point is loaded as it loads it. A ``ModuleNotFoundError`` there is the
  trap: the auto-instrumentation takes it for "the library is not installed" and skips the
  instrumentation silently (openai-v2 2.4b0 with ``opentelemetry-util-genai`` >= 1.2b0, or
  without ``httpx``);
* the SDK configurator and the exporters ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER`` name (an
  exporter that is not installed stops the SDK set-up, and every instrumentation with it);
* the store (reachable or not; its URL redacted), the quotas and the alert handlers (built-in
  handlers' reprs redact URLs and passwords; others show their class and name only).

Exit status 1 when something would stop counting (an LLM instrumentation that would not be
activated although its library is installed, a missing exporter or configurator, an unreachable
store, a broken config file or variable), else 0, with warnings for what is merely not set up
yet (no quotas, no handlers, no instrumentation installed).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal

import click

from otel_llm_quota import environment_variables as env
from otel_llm_quota._instrumentations import (
    INSTRUMENTOR_GROUP,
    LLM_CLIENTS,
    anthropic_sdk_tracing,
    describe_handler,
    is_llm_entry_point,
)
from otel_llm_quota.cli._app import CliError, cli, open_manager

__all__ = ["Check", "doctor", "run_checks"]

Status = Literal["ok", "info", "warning", "failure"]

KNOWN_GOOD: Final[Mapping[str, tuple[str, str, str]]] = {
    # instrumentation distribution: (dependency, its module, the versions it works with)
    "opentelemetry-instrumentation-openai-v2": (
        "opentelemetry-util-genai",
        "opentelemetry.util.genai",
        ">=0.4b0,<0.5b0",
    ),
}
"""Dependencies whose newer releases break an instrumentation that does not bound them: openai-v2
2.4b0 asks for ``opentelemetry-util-genai>=0.4b0.dev``, but fails to import with 1.2b0 and later
(and changes its output with 1.0b0/1.1b0)."""

_EXPORTER_PACKAGES: Final = {
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
    "prometheus": "opentelemetry-exporter-prometheus",
    "console": "opentelemetry-sdk",
}
_OTLP_BY_PROTOCOL: Final = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_SIGNALS: Final = ("traces", "metrics", "logs")


@dataclass
class Check:
    """One finding: ``failure`` stops counting, ``warning`` is worth a look, ``ok``/``info``
    are facts."""

    section: str
    name: str
    status: Status
    detail: str
    fix: str | None = None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _clients() -> list[Check]:
    checks = [
        Check("LLM clients", name, "info", version)
        for name in LLM_CLIENTS
        if (version := _version(name)) is not None
    ]
    if not checks:
        checks.append(
            Check(
                "LLM clients",
                "none",
                "warning",
                "no LLM client library is installed",
                "pip install 'otel-llm-quota[openai]' (or [anthropic])",
            )
        )
    return checks


def _known_good_problem(distribution: str) -> tuple[str, str] | None:
    """``(installed, fix)`` when a dependency in KNOWN_GOOD is outside its working versions."""
    known = KNOWN_GOOD.get(distribution.lower())
    if known is None:
        return None
    dependency, _, spec = known
    installed = _version(dependency)
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # packaging comes with opentelemetry-instrumentation
        return None
    if installed is not None and SpecifierSet(spec, prereleases=True).contains(installed):
        return None
    shown = f"{dependency} {installed}" if installed else f"no {dependency}"
    return shown, f"pip install '{dependency}{spec}' (or pip install 'otel-llm-quota[openai]')"


def _import_fix(distribution: str, exc: ImportError) -> str:
    """The pip command(s) that make the instrumentation import: the known-good pin of a
    dependency that broke it, and/or the package of a module it imports but does not require."""
    fixes: list[str] = []
    known = _known_good_problem(distribution)
    if known is not None:
        fixes.append(known[1])
    missing = getattr(exc, "name", None)
    if isinstance(exc, ModuleNotFoundError) and missing:
        top = missing.split(".")[0]
        if top != "opentelemetry":  # a namespace shared by many distributions
            owners = metadata.packages_distributions().get(top, [])
            fixes.insert(0, f"pip install {owners[0] if len(owners) == 1 else top}")
    if not fixes:
        fixes.append(f"pip install --force-reinstall {distribution} (and check its requirements)")
    return "; ".join(fixes)


def _disabled() -> set[str]:
    raw = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {item.strip() for item in raw.split(",") if item.strip()}


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence what importing instrumentations and exporters logs (the checks report it)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def _instrumentations() -> tuple[list[Check], bool]:
    """The instrumentor entry points; the second value says whether opentelemetry-instrument
    is installed (then the zero-code checks apply)."""
    section = "Instrumentations"
    instrumentation = _version("opentelemetry-instrumentation")
    checks: list[Check] = []
    if instrumentation is None:
        checks.append(
            Check(
                section,
                "opentelemetry-instrument",
                "warning",
                "not installed: the zero-code path is not available (instrument() in code works)",
                "pip install 'otel-llm-quota[openai]' (or opentelemetry-distro)",
            )
        )
        conflicts: Any = None
    else:
        checks.append(Check(section, "opentelemetry-instrument", "ok", instrumentation))
        try:
            from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

            conflicts = get_dist_dependency_conflicts
        except ImportError:
            conflicts = None
    disabled = _disabled()
    usable = 0
    for dist in metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for entry_point in dist.entry_points:
            if entry_point.group != INSTRUMENTOR_GROUP:
                continue
            llm = is_llm_entry_point(entry_point.name)
            name = f"{dist_name} {dist.version} ({entry_point.name})"
            bad: Status = "failure" if llm else "warning"
            if "*" in disabled or entry_point.name in disabled:
                if llm:
                    checks.append(
                        Check(
                            section,
                            name,
                            "warning",
                            "disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
                            f"remove {entry_point.name!r} from "
                            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
                        )
                    )
                continue
            conflict = conflicts(dist) if conflicts is not None else None
            if conflict is not None:
                if not llm:
                    continue
                required = conflict.required or " or ".join(map(str, conflict.required_any or ()))
                required = str(required).split(";")[0].strip()  # without the extra marker
                if not conflict._is_version_conflict:  # its library is not installed: fine
                    checks.append(
                        Check(section, name, "info", f"not activated: {required} not installed")
                    )
                    continue
                checks.append(
                    Check(
                        section,
                        name,
                        bad,
                        f"would not be activated: {conflict}",
                        f"pip install '{required}'",
                    )
                )
                continue
            try:
                with _quiet():
                    entry_point.load()
            except ImportError as exc:
                silently = (
                    " (opentelemetry-instrument skips it without a word: it takes a "
                    "ModuleNotFoundError for a library that is not installed)"
                    if isinstance(exc, ModuleNotFoundError)
                    else ""
                )
                known = _known_good_problem(dist_name)
                with_dependency = f" with {known[0]} installed" if known else ""
                checks.append(
                    Check(
                        section,
                        name,
                        bad,
                        f"fails to import{with_dependency}: {exc}{silently}",
                        _import_fix(dist_name, exc),
                    )
                )
                continue
            except Exception as exc:
                checks.append(
                    Check(
                        section,
                        name,
                        "failure",
                        f"fails to load ({type(exc).__name__}: {exc}): opentelemetry-instrument "
                        "stops there and activates nothing after it",
                        f"pip install --force-reinstall {dist_name}, or add "
                        f"{entry_point.name!r} to OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
                    )
                )
                continue
            if not llm:
                continue
            usable += 1
            known = _known_good_problem(dist_name)
            if known is not None:
                checks.append(
                    Check(
                        section,
                        name,
                        "warning",
                        f"imports, but {known[0]} is not a version it is known to work with",
                        known[1],
                    )
                )
            else:
                checks.append(
                    Check(section, name, "ok", "imports; opentelemetry-instrument activates it")
                )
    if _version("anthropic") is not None:
        if anthropic_sdk_tracing():
            usable += 1
            checks.append(Check(section, "anthropic SDK", "ok", "makes spans of its own calls"))
        else:
            checks.append(
                Check(section, "anthropic SDK", "info", "makes no spans of its own calls")
            )
    if usable == 0:
        checks.append(
            Check(
                section,
                "LLM instrumentation",
                "warning",
                "none would be activated: no LLM span is made, so nothing is counted",
                "pip install 'otel-llm-quota[openai]' (or [anthropic])",
            )
        )
    return checks, instrumentation is not None


def _entry_point_names(group: str) -> list[str]:
    return [entry_point.name for entry_point in metadata.entry_points(group=group)]


def _exporters() -> list[Check]:
    """What opentelemetry-instrument's SDK set-up needs: a configurator and the exporters named
    (the SDK's own resolution of ``otlp`` by ``OTEL_EXPORTER_OTLP_*PROTOCOL``)."""
    section = "Exporters"
    checks: list[Check] = []
    if not _entry_point_names("opentelemetry_configurator"):
        return [
            Check(
                section,
                "SDK configurator",
                "failure",
                "none installed: opentelemetry-instrument leaves the no-op tracer provider, "
                "so no span is made",
                "pip install opentelemetry-distro",
            )
        ]
    distros = _entry_point_names("opentelemetry_distro")
    wanted = os.environ.get("OTEL_PYTHON_DISTRO")
    chosen = wanted if wanted in distros else (distros[0] if distros else None)
    default = "otlp" if chosen == "distro" else "none"  # opentelemetry-distro's defaults
    for signal in _SIGNALS:
        variable = f"OTEL_{signal.upper()}_EXPORTER"
        raw = os.environ.get(variable, "").strip() or default
        if raw.lower() == "none":
            checks.append(Check(section, signal, "info", f"none ({variable}): not exported"))
            continue
        for name in (part.strip() for part in raw.split(",") if part.strip()):
            component = name
            if name == "otlp":
                protocol = (
                    os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                    or "grpc"
                ).strip()
                component = _OTLP_BY_PROTOCOL.get(protocol, "")
                if not component:
                    checks.append(
                        Check(
                            section,
                            signal,
                            "failure",
                            f"unsupported OTLP protocol {protocol!r}",
                            "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf or grpc",
                        )
                    )
                    continue
            group = f"opentelemetry_{signal}_exporter"
            found = list(metadata.entry_points(group=group, name=component))
            package = _EXPORTER_PACKAGES.get(component, f"the package of exporter {component!r}")
            if not found:
                other = "otlp_proto_http" if component == "otlp_proto_grpc" else None
                alternative = (
                    ", or OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (installed)"
                    if other and metadata.entry_points(group=group, name=other)
                    else ""
                )
                checks.append(
                    Check(
                        section,
                        signal,
                        "failure",
                        f"{variable}={raw}: requested component {component!r} not found: "
                        "opentelemetry-instrument fails to set up the SDK and activates no "
                        "instrumentation",
                        f"pip install {package}{alternative}, or {variable}=none",
                    )
                )
                continue
            try:
                with _quiet():
                    found[0].load()
            except Exception as exc:
                checks.append(
                    Check(
                        section,
                        signal,
                        "failure",
                        f"exporter {component!r} fails to import: {type(exc).__name__}: {exc}",
                        f"pip install --force-reinstall {package}",
                    )
                )
                continue
            checks.append(Check(section, signal, "ok", f"{component} ({variable}={raw})"))
    return checks


def _file_store(path: str | None) -> str | None:
    """The ``store:`` URL of a config file, when it has a readable one."""
    if path is None:
        return None
    from otel_llm_quota._config import ConfigError, read_config_file

    try:
        raw = read_config_file(path).get("store")
    except ConfigError:
        return None  # reported by the configuration check
    if isinstance(raw, Mapping):
        raw = raw.get("url")
    return raw if isinstance(raw, str) and raw.strip() else None


def _configuration(store: str | None, config: Path | None) -> list[Check]:
    from otel_llm_quota import load_config
    from otel_llm_quota._env import env_bool
    from otel_llm_quota.stores import redact_url

    checks: list[Check] = []
    section = "Configuration"
    if not env_bool(env.OTEL_LLM_QUOTA_ENABLED, True):
        checks.append(
            Check(
                section,
                env.OTEL_LLM_QUOTA_ENABLED,
                "warning",
                "false: opentelemetry-instrument does not attach the quota processor",
                f"unset {env.OTEL_LLM_QUOTA_ENABLED}",
            )
        )
    path = str(config) if config is not None else os.environ.get(env.OTEL_LLM_QUOTA_CONFIG_FILE)
    path = path.strip() if path and path.strip() else None
    checks.append(Check(section, "config file", "info", path or "none"))
    config_logger = logging.getLogger("otel_llm_quota._config")
    disabled = config_logger.disabled
    config_logger.disabled = True  # each error is reported below, once
    try:
        setup = load_config(path, environment=True, strict=False, validate_only=True)
    finally:
        config_logger.disabled = disabled
    try:
        for error in setup.errors:
            checks.append(Check(section, "error", "failure", error, "fix the file or variable"))
        quotas = [q for q in setup.manager.ledger.get_all() if q.quota_limit is not None]
        for q in quotas:
            thresholds = ", ".join(f"{t:g}%" for t in q.thresholds)
            checks.append(
                Check(
                    "Quotas",
                    q.config_id,
                    "ok",
                    f"{q.quota_limit} tokens per {q.period or 'ever'}, alerts at {thresholds}",
                )
            )
        if not quotas:
            checks.append(
                Check(
                    "Quotas",
                    "none",
                    "warning",
                    "no quota has a limit: usage is counted, nothing alerts",
                    f'{env.OTEL_LLM_QUOTA_LIMITS}="openai=1000000", or quotas: in the config file',
                )
            )
        handlers = setup.manager.alert_handlers
        for handler in handlers:
            checks.append(Check("Handlers", describe_handler(handler), "ok", "configured"))
        if not handlers:
            checks.append(
                Check(
                    "Handlers",
                    "none",
                    "warning",
                    "no alert handler: alerts show in the status and metrics only",
                    f"{env.OTEL_LLM_QUOTA_ALERT_HANDLERS}=logging, or handlers: in the file",
                )
            )
    finally:
        setup.manager.close()
    given = store if store is not None else os.environ.get(env.OTEL_LLM_QUOTA_STORE, "").strip()
    url = given or _file_store(path)
    if not url:
        checks.append(Check("Store", "none", "info", "each process counts its own usage"))
        return checks
    try:
        manager = open_manager(url)
    except CliError as exc:
        checks.append(
            Check(
                "Store",
                redact_url(url),
                "failure",
                exc.message,
                "start the store, or fix the URL (--store / OTEL_LLM_QUOTA_STORE)",
            )
        )
        return checks
    try:
        configs = len(manager.ledger.get_all())
    finally:
        manager.close()
    checks.append(Check("Store", redact_url(url), "ok", f"reachable; {configs} configs"))
    return checks


def run_checks(store: str | None = None, config: Path | None = None) -> list[Check]:
    """Every finding of ``otel-llm-quota doctor``, in the order it prints them."""
    checks = _clients()
    found, zero_code = _instrumentations()
    checks += found
    if zero_code:
        checks += _exporters()
    checks += _configuration(store, config)
    return checks


_MARKS: Final[Mapping[str, tuple[str, str]]] = {
    "ok": ("✔", "green"),
    "info": ("·", "dim"),
    "warning": ("!", "yellow"),
    "failure": ("✘", "red"),
}


@cli.command("doctor")
@click.option("--store", "store", default=None, help="Store URL (default: OTEL_LLM_QUOTA_STORE).")
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Config file (default: OTEL_LLM_QUOTA_CONFIG_FILE).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(store: str | None, config: Path | None, as_json: bool) -> None:
    """Check why LLM usage would not be counted: instrumentations, exporters, store, quotas.

    Exits 1 when something would stop counting, else 0 (with warnings).
    """
    checks = run_checks(store, config)
    failures = sum(c.status == "failure" for c in checks)
    warnings = sum(c.status == "warning" for c in checks)
    if as_json:
        out = {"checks": [asdict(c) for c in checks], "failures": failures, "warnings": warnings}
        click.echo(json.dumps(out, indent=2))
    else:
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False)
        section = None
        for check in checks:
            if check.section != section:
                section = check.section
                console.print(f"\n[bold]{escape(section)}[/bold]")
            mark, colour = _MARKS[check.status]
            console.print(
                f" [{colour}]{mark}[/{colour}] {escape(check.name)}: {escape(check.detail)}"
            )
            if check.fix and check.status in {"warning", "failure"}:
                console.print(f"     fix: {escape(check.fix)}")
        verdict = (
            f"[red]{failures} problem(s) stop counting[/red]"
            if failures
            else "[green]nothing stops counting[/green]"
        )
        console.print(f"\n{verdict}, {warnings} warning(s)")
    if failures:
        raise SystemExit(1)
