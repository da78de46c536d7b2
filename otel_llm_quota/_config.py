"""Configuration from a file (JSON or YAML) and from environment variables.

The file is a mapping with these top-level keys, all optional::

    manager:    {timezone, cooldown_seconds, handler_timeout_seconds, send_resolved, default_period}
    monitor:    {enabled: true, interval_seconds: 60}
    processor:  {default_config_id: "unknown", max_tracked_responses: 10000}
    quotas:     [{config_id, limit, thresholds: [50, 80], period, timezone, provider}, ...]
    rules:      [{config_id, match: {provider: openai, model: "gpt-4o*", service.name: api}}, ...]
    handlers:   [{type: logging | otel_log | webhook | slack | email | alertmanager
                        | "package.module:factory", ...keyword arguments}, ...]

Environment variables (see ``environment_variables``) add to it: ``OTEL_LLM_QUOTA_LIMITS`` quotas
are applied after the file's (so they win for the same config id), ``OTEL_LLM_QUOTA_ALERT_HANDLERS``
handlers are added to the file's.

Built-in handler names are looked up lazily in ``otel_llm_quota.handlers``; an import string
``"module:factory"`` names any callable, called with the entry's other keys as keyword arguments.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from otel_llm_quota import environment_variables as env
from otel_llm_quota._env import env_str
from otel_llm_quota._handlers import AnyAlertHandler
from otel_llm_quota._manager import LLMProviderManager
from otel_llm_quota._rules import ConfigRule
from otel_llm_quota._validation import check_config_id, check_limit, check_positive_seconds
from otel_llm_quota.stores import StoreError, open_store, redact_url

__all__ = ["ConfigError", "QuotaSetup", "build_handler", "load_config", "read_config_file"]

_logger = logging.getLogger(__name__)

BUILTIN_HANDLERS: Final[Mapping[str, str]] = {
    "alertmanager": "AlertmanagerAlertHandler",
    "email": "EmailAlertHandler",
    "logging": "LoggingAlertHandler",
    "otel_log": "OTelLogEventHandler",
    "slack": "SlackAlertHandler",
    "webhook": "WebhookAlertHandler",
}
"""Built-in handler type names and their class in ``otel_llm_quota.handlers``."""
BUILTIN_HANDLERS_MODULE: Final = "otel_llm_quota.handlers"

_SECTIONS: Final = frozenset(
    {"manager", "monitor", "processor", "quotas", "rules", "handlers", "store"}
)
_MANAGER_KEYS: Final = frozenset(
    {"timezone", "cooldown_seconds", "handler_timeout_seconds", "send_resolved", "default_period"}
)
_MONITOR_KEYS: Final = frozenset({"enabled", "interval_seconds"})
_PROCESSOR_KEYS: Final = frozenset({"default_config_id", "max_tracked_responses"})
_QUOTA_KEYS: Final = frozenset(
    {
        "config_id",
        "limit",
        "thresholds",
        "alert_threshold_percent",
        "period",
        "timezone",
        "provider",
    }
)


class ConfigError(ValueError):
    """A configuration file or variable that cannot be used; the message says where and why."""


@dataclass
class QuotaSetup:
    """A manager configured from a file and/or the environment, and what goes with it."""

    manager: LLMProviderManager
    processor_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``QuotaSpanProcessor`` (rules, default_config_id...)."""
    monitor: bool = True
    """Whether the monitor should be started (``monitor.enabled``)."""
    monitor_interval_seconds: float | None = None
    errors: list[str] = field(default_factory=list)
    """Problems that were logged and skipped (non-strict loading only)."""


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a JSON or YAML (``.yaml``/``.yml``, needs the ``yaml`` extra) file into a mapping."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(file)!r}: {exc}") from exc
    if file.suffix.lower() in {".yaml", ".yml"}:
        try:
            import yaml  # optional dependency, imported only for YAML files
        except ImportError as exc:
            raise ConfigError(
                f"{str(file)!r} is YAML: install PyYAML (pip install 'otel-llm-quota[yaml]')"
            ) from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{str(file)!r} is not valid YAML: {exc}") from exc
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{str(file)!r} is not valid JSON: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{str(file)!r} must hold a mapping at the top level")
    return data


def _resolve_factory(type_name: str) -> Callable[..., Any]:
    if type_name in BUILTIN_HANDLERS:
        module_name, attr = BUILTIN_HANDLERS_MODULE, BUILTIN_HANDLERS[type_name]
    elif ":" in type_name:
        module_name, _, attr = type_name.partition(":")
    else:
        known = ", ".join(sorted(BUILTIN_HANDLERS))
        raise ConfigError(
            f"unknown handler type {type_name!r}: use one of {known} or 'package.module:factory'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"handler type {type_name!r} needs module {module_name!r}, which cannot be "
            f"imported: {exc}"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"handler type {type_name!r}: {module_name!r} has no attribute {attr!r}"
            ) from None
    if not callable(target):
        raise ConfigError(f"handler type {type_name!r} does not name a callable")
    return target  # type: ignore[no-any-return]  # checked callable above


def build_handler(spec: Mapping[str, Any] | str) -> AnyAlertHandler:
    """Create an alert handler from ``{"type": ..., **kwargs}`` (or a bare type string)."""
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a handler entry must be a mapping with a 'type', not {spec!r}")
    kwargs = {str(k): v for k, v in spec.items()}
    type_name = kwargs.pop("type", None)
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(f"a handler entry needs a 'type': {dict(spec)!r}")
    factory = _resolve_factory(type_name)
    try:
        handler = factory(**kwargs)
    except Exception as exc:
        raise ConfigError(f"handler type {type_name!r} could not be created: {exc}") from exc
    return handler  # type: ignore[no-any-return]  # the manager checks the handler's shape


def _section(config: Mapping[str, Any], name: str, keys: frozenset[str]) -> dict[str, Any]:
    value = config.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"'{name}' must be a mapping")
    unknown = set(value) - keys
    if unknown:
        raise ConfigError(f"unknown keys in '{name}': {sorted(unknown)}")
    return dict(value)


def _list(config: Mapping[str, Any], name: str) -> list[Any]:
    value = config.get(name)
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"'{name}' must be a list")
    return list(value)


def _apply_quota(manager: LLMProviderManager, quota: Any) -> None:
    if not isinstance(quota, Mapping):
        raise ConfigError(f"a quota must be a mapping, not {quota!r}")
    unknown = set(quota) - _QUOTA_KEYS
    if unknown:
        raise ConfigError(f"unknown quota keys: {sorted(unknown)}")
    if "config_id" not in quota or "limit" not in quota:
        raise ConfigError(f"a quota needs 'config_id' and 'limit': {dict(quota)!r}")
    kwargs: dict[str, Any] = {}
    for key in ("period", "timezone", "provider"):
        if key in quota:
            kwargs[key] = quota[key]
    if "thresholds" in quota:
        kwargs["thresholds"] = quota["thresholds"]
    try:
        manager.set_quota_limit_sync(
            quota["config_id"],
            quota["limit"],
            quota.get("alert_threshold_percent"),
            **kwargs,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"quota {quota.get('config_id')!r}: {exc}") from exc


def parse_limits(raw: str) -> list[tuple[str, int]]:
    """``"openai-prod=100000, anthropic-dev=5e4"`` is refused; ``"a=100,b=200"`` gives pairs."""
    pairs: list[tuple[str, int]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        config_id, sep, limit = item.rpartition("=")
        if not sep:
            raise ConfigError(f"{env.OTEL_LLM_QUOTA_LIMITS}: {item!r} is not config_id=limit")
        try:
            pairs.append((check_config_id(config_id.strip()), check_limit(int(limit.strip()))))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{env.OTEL_LLM_QUOTA_LIMITS}: {item!r}: {exc}") from exc
    return pairs


def _parse_thresholds(raw: str) -> list[float]:
    try:
        return [float(x) for x in raw.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(f"{env.OTEL_LLM_QUOTA_THRESHOLDS}={raw!r}: {exc}") from exc


class _Collector:
    """Runs configuration steps; strict mode raises the first error, else logs and goes on."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.errors: list[str] = []

    def run(self, what: str, step: Callable[[], None]) -> None:
        try:
            step()
        except ConfigError as exc:
            if self.strict:
                raise
            self.errors.append(f"{what}: {exc}")
            _logger.error("otel-llm-quota: %s: %s (skipped)", what, exc)


def load_config(
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    environment: bool = True,
    strict: bool = True,
    manager: LLMProviderManager | None = None,
) -> QuotaSetup:
    """Build a manager (quotas, handlers), processor options and monitor settings.

    ``config`` is a mapping or the path of a JSON/YAML file; with ``environment`` (default) the
    ``OTEL_LLM_QUOTA_*`` variables are read too (a file named by ``OTEL_LLM_QUOTA_CONFIG_FILE``
    when ``config`` is None). ``strict`` raises ``ConfigError`` on the first problem; otherwise
    each bad section or entry is logged, skipped and listed in ``QuotaSetup.errors``.
    """
    collect = _Collector(strict)
    data: dict[str, Any] = {}

    def read() -> None:
        nonlocal data
        source: Mapping[str, Any] | str | os.PathLike[str] | None = config
        if source is None and environment:
            source = env_str(env.OTEL_LLM_QUOTA_CONFIG_FILE)
        if source is None:
            return
        data = dict(source) if isinstance(source, Mapping) else read_config_file(source)
        unknown = set(data) - _SECTIONS
        if unknown:
            raise ConfigError(f"unknown top-level keys: {sorted(unknown)}")

    collect.run("config file", read)

    manager_kwargs: dict[str, Any] = {}

    def manager_section() -> None:
        manager_kwargs.update(_section(data, "manager", _MANAGER_KEYS))

    collect.run("manager", manager_section)

    def store_section() -> None:
        raw = data.get("store")
        where = "'store'"
        if raw is None and environment:
            raw = env_str(env.OTEL_LLM_QUOTA_STORE)
            where = env.OTEL_LLM_QUOTA_STORE
        if raw is None:
            return
        options: dict[str, Any] = {}
        if isinstance(raw, Mapping):
            options = dict(raw)
            url = options.pop("url", None)
            interval = options.pop("flush_interval_seconds", None)
            if interval is not None:
                manager_kwargs["flush_interval_seconds"] = interval
        else:
            url = raw
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(f"{where} must be a store URL (or a mapping with 'url')")
        try:
            manager_kwargs["store"] = open_store(url, **options)
        except (TypeError, ValueError, ImportError, StoreError) as exc:
            raise ConfigError(f"{where} ({redact_url(url)}): {exc}") from exc

    if manager is None:
        collect.run("store", store_section)
        manager_kwargs.setdefault("store", False)  # what store_section did not take: none
        try:
            manager = LLMProviderManager(**manager_kwargs)
        except (TypeError, ValueError) as exc:
            collect.run("manager", _raiser(ConfigError(f"'manager': {exc}")))
            manager = LLMProviderManager(store=manager_kwargs["store"])
    setup = QuotaSetup(manager=manager)

    def monitor_section() -> None:
        section = _section(data, "monitor", _MONITOR_KEYS)
        enabled = section.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError("'monitor.enabled' must be true or false")
        setup.monitor = enabled
        if "interval_seconds" in section:
            try:
                setup.monitor_interval_seconds = check_positive_seconds(
                    "interval_seconds", section["interval_seconds"]
                )
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"'monitor': {exc}") from exc

    def processor_section() -> None:
        section = _section(data, "processor", _PROCESSOR_KEYS)
        if environment:
            default_id = env_str(env.OTEL_LLM_QUOTA_DEFAULT_CONFIG_ID)
            if default_id is not None:
                section["default_config_id"] = default_id
            capacity = env_str(env.OTEL_LLM_QUOTA_MAX_TRACKED_RESPONSES)
            if capacity is not None:
                try:
                    section["max_tracked_responses"] = int(capacity)
                except ValueError:
                    raise ConfigError(
                        f"{env.OTEL_LLM_QUOTA_MAX_TRACKED_RESPONSES}={capacity!r} is not an int"
                    ) from None
        if "default_config_id" in section:
            try:
                check_config_id(section["default_config_id"])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"'processor.default_config_id': {exc}") from exc
        capacity_value = section.get("max_tracked_responses", 1)
        if type(capacity_value) is not int or capacity_value < 1:
            raise ConfigError("'processor.max_tracked_responses' must be a positive int")
        setup.processor_options.update(section)

    collect.run("monitor", monitor_section)
    collect.run("processor", processor_section)

    def quotas() -> None:
        for quota in _list(data, "quotas"):
            collect.run(
                f"quota {_name(quota)}", functools.partial(_apply_quota, setup.manager, quota)
            )

    def env_quotas() -> None:
        raw = env_str(env.OTEL_LLM_QUOTA_LIMITS)
        if raw is None:
            return
        thresholds_raw = env_str(env.OTEL_LLM_QUOTA_THRESHOLDS)
        period = env_str(env.OTEL_LLM_QUOTA_PERIOD)
        quota: dict[str, Any] = {}
        if thresholds_raw is not None:
            quota["thresholds"] = _parse_thresholds(thresholds_raw)
        if period is not None:
            quota["period"] = None if period.lower() == "none" else period
        for config_id, limit in parse_limits(raw):
            _apply_quota(setup.manager, {**quota, "config_id": config_id, "limit": limit})

    collect.run("quotas", quotas)
    if environment:
        collect.run(env.OTEL_LLM_QUOTA_LIMITS, env_quotas)

    def rules() -> None:
        built: list[ConfigRule] = []
        for rule in _list(data, "rules"):
            if not isinstance(rule, Mapping):
                raise ConfigError(f"a rule must be a mapping, not {rule!r}")
            try:
                built.append(ConfigRule.from_dict(rule))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"rule {rule.get('config_id')!r}: {exc}") from exc
        if built:
            setup.processor_options["rules"] = built

    collect.run("rules", rules)

    def add_handler(spec: Any) -> None:
        handler = build_handler(spec)
        try:
            setup.manager.add_alert_handler(handler)
        except (TypeError, ValueError) as exc:  # e.g. a factory that built a non-handler
            raise ConfigError(f"handler {_name(spec, 'type')}: {exc}") from exc

    def handlers() -> None:
        for spec in _list(data, "handlers"):
            collect.run(f"handler {_name(spec, 'type')}", functools.partial(add_handler, spec))

    def env_handlers() -> None:
        raw = env_str(env.OTEL_LLM_QUOTA_ALERT_HANDLERS)
        for name in (raw or "").split(","):
            type_name = name.strip()
            if type_name:
                collect.run(f"handler {type_name!r}", functools.partial(add_handler, type_name))

    collect.run("handlers", handlers)
    if environment:
        collect.run(env.OTEL_LLM_QUOTA_ALERT_HANDLERS, env_handlers)
    setup.errors = collect.errors
    return setup


def _name(entry: object, key: str = "config_id") -> str:
    if isinstance(entry, Mapping):
        return repr(entry.get(key))
    return repr(entry)


def _raiser(exc: ConfigError) -> Callable[[], None]:
    def step() -> None:
        raise exc

    return step
