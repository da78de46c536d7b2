"""Configuration from a file (JSON or YAML) and from environment variables.

The file is a mapping with these top-level keys, all optional::

    manager:    {timezone, cooldown_seconds, handler_timeout_seconds, send_resolved, default_period}
    monitor:    {enabled: true, interval_seconds: 60, forecast: true, forecast_window_seconds,
                 forecast_min_lead_seconds, forecast_min_samples}
    processor:  {default_config_id: "unknown", max_tracked_responses: 10000}
    quotas:     [{config_id, limit, thresholds: [50, 80], period, timezone, provider,
                  parent, cost_limit_usd: 50.0, cost_thresholds: [80, 100]}, ...]
    prices:     [{provider: openai, model: "ft:gpt-4o*", input: 0.3, output: 1.2,
                  cache_read: 0.15, cache_write: 0.3, request: 0}, {model: "llama*", free: true}]
    rules:      [{config_id, match: {provider: openai, model: "gpt-4o*", service.name: api}},
                 {config_id: "tenant-{value}", attribute: app.tenant_id}, ...]

A quota's ``parent`` names another quota its usage (tokens and cost) also counts toward (nested
budgets); the order of the quotas does not matter, and an unknown parent or a cycle is an error
of the quota that names it. ``limit: null`` declares a config without a token limit (a parent
that only aggregates, or one with a cost limit alone).
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
import inspect
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from otel_llm_quota import environment_variables as env
from otel_llm_quota._env import env_str
from otel_llm_quota._handlers import AnyAlertHandler
from otel_llm_quota._manager import LLMProviderManager, _forecast_settings
from otel_llm_quota._rules import ConfigRule
from otel_llm_quota._validation import (
    MAX_CONFIG_ID_LENGTH,
    check_bool,
    check_config_id,
    check_limit,
    check_positive_seconds,
)
from otel_llm_quota.stores import MemoryStore, StoreError, open_store, redact_url

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
    {"manager", "monitor", "processor", "quotas", "rules", "handlers", "store", "prices"}
)
_MANAGER_KEYS: Final = frozenset(
    {
        "timezone",
        "cooldown_seconds",
        "handler_timeout_seconds",
        "send_resolved",
        "default_period",
        "shutdown_timeout_seconds",
        "handler_queue_size",
    }
)
_FORECAST_KEYS: Final = frozenset(
    {"forecast", "forecast_window_seconds", "forecast_min_lead_seconds", "forecast_min_samples"}
)
_MONITOR_KEYS: Final = frozenset({"enabled", "interval_seconds"}) | _FORECAST_KEYS
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
        "cost_limit_usd",
        "cost_thresholds",
        "parent",
    }
)


class ConfigError(ValueError):
    """A configuration file or variable that cannot be used; the message says where and why.

    ``str(error)`` is ``"<source>: <key>: <reason>"``: ``source`` is the file (or environment
    variable) the problem is in, ``key`` the section or entry in it, each when known. Messages
    name keys and types but never show configuration values, which may hold tokens and secrets
    (they are logged at ERROR by lenient loading).
    """

    def __init__(self, reason: str, *, source: str | None = None, key: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source = source
        self.key = key

    def locate(self, source: str | None, key: str | None) -> ConfigError:
        """Fill in ``source`` and ``key`` where they are not known yet; returns ``self``."""
        if self.source is None:
            self.source = source
        if self.key is None:
            self.key = key
        return self

    def __str__(self) -> str:
        return ": ".join(part for part in (self.source, self.key, self.reason) if part)


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


MAX_CONFIG_DEPTH: Final = 32
"""The deepest nesting a configuration file may have (the format needs 4 levels)."""


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a UTF-8 JSON or YAML (``.yaml``/``.yml``, needs the ``yaml`` extra) file.

    Every problem (unreadable, not UTF-8, not valid JSON/YAML, nested deeper than
    ``MAX_CONFIG_DEPTH``, not a mapping) is a ``ConfigError`` whose ``source`` is the file.
    Parser messages are reduced to the position: YAML's quote the offending line, which may hold
    a token.
    """
    from pathlib import Path  # here: ~2 ms at start-up for what only a config file needs

    file = Path(path)
    where = str(file)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", source=where) from None
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is tolerated
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {exc.start}); save the file as UTF-8", source=where
        ) from None
    try:
        if file.suffix.lower() in {".yaml", ".yml"}:
            data = _parse_yaml(text, where)
        else:
            try:
                data = json.loads(text)
            except ValueError as exc:
                position = (
                    f"line {exc.lineno}, column {exc.colno}"
                    if isinstance(exc, json.JSONDecodeError)
                    else "?"
                )
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                raise ConfigError(f"not valid JSON: {msg} at {position}", source=where) from None
        _check_depth(data, where)
    except RecursionError:
        raise ConfigError(f"nested deeper than {MAX_CONFIG_DEPTH} levels", source=where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("must hold a mapping at the top level", source=where)
    return data


def _parse_yaml(text: str, where: str) -> Any:
    try:
        import yaml  # optional dependency, imported only for YAML files
    except ImportError:
        raise ConfigError(
            "a YAML file: install PyYAML (pip install 'otel-llm-quota[yaml]')", source=where
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        position = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigError(f"not valid YAML: {problem}{position}", source=where) from None


def _check_depth(data: object, where: str) -> None:
    """Refuse a document nested deeper than ``MAX_CONFIG_DEPTH`` (iteratively: no recursion).

    YAML aliases can share a node between many parents (or make a cycle): each container is
    walked again only when reached deeper than before, so the walk stays linear in the number of
    distinct containers, and a cycle ends as too deep.
    """
    deepest: dict[int, int] = {}
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[object] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"nested deeper than {MAX_CONFIG_DEPTH} levels", source=where)
        if deepest.get(id(node), 0) >= depth:
            continue
        deepest[id(node)] = depth
        stack.extend((child, depth + 1) for child in children)


_IMPORT_STRING: Final = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][\w.]{0,63}")


def _shown_type(type_name: str) -> str:
    """The handler type as it may appear in a message: a built-in name, an import string

    (or any short dotted identifier). Anything else (a webhook URL put in the ``handlers``
    list by mistake, a token) is not shown.
    """
    if _IDENTIFIER.fullmatch(type_name) or _IMPORT_STRING.fullmatch(type_name):
        return repr(type_name)
    return f"<a str of {len(type_name)} characters>"


def _resolve_factory(type_name: str) -> Callable[..., Any]:
    if type_name in BUILTIN_HANDLERS:
        module_name, attr = BUILTIN_HANDLERS_MODULE, BUILTIN_HANDLERS[type_name]
    elif _IMPORT_STRING.fullmatch(type_name):
        module_name, _, attr = type_name.partition(":")
    else:
        known = ", ".join(sorted(BUILTIN_HANDLERS))
        raise ConfigError(
            f"unknown handler type {_shown_type(type_name)}: use one of {known} or "
            "'package.module:factory'"
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
    """Create an alert handler from ``{"type": ..., **kwargs}`` (or a bare type string).

    Errors name the entry's keys, never its values (URLs, tokens, HMAC secrets): the message of
    an exception raised by the factory is shown with every string value of the entry masked.
    """
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"a handler entry must be a mapping with a 'type', not {type(spec).__name__}"
        )
    kwargs = {str(k): v for k, v in spec.items()}
    type_name = kwargs.pop("type", None)
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(f"a handler entry needs a 'type' (it has keys {_keys(spec)})")
    factory = _resolve_factory(type_name)
    try:
        handler = factory(**kwargs)
    except Exception as exc:
        raise ConfigError(
            f"handler type {_shown_type(type_name)} could not be created: "
            f"{_masked(str(exc), kwargs)}"
        ) from None  # the original exception (and its traceback) may quote the values
    return handler  # type: ignore[no-any-return]  # the manager checks the handler's shape


def _keys(mapping: Mapping[Any, Any] | set[Any]) -> list[str]:
    """The keys, sorted as strings (a YAML file may have keys of any type)."""
    return sorted(str(key) for key in mapping)


def _strings(value: object, out: set[str]) -> set[str]:
    """Every str inside ``value`` (mapping values, list items), for ``_masked``.

    Iterative, and each container once (YAML aliases share nodes, and may make cycles).
    """
    seen: set[int] = set()
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.add(node)
            continue
        if isinstance(node, Mapping):
            children: Iterable[object] = node.values()
        elif isinstance(node, (list, tuple, set, frozenset)):
            children = node
        else:
            continue
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(children)
    return out


def _masked(message: str, entry: object) -> str:
    """``message`` with each string value of ``entry`` replaced by ``***``.

    Quoted occurrences (``'value'``, ``"value"``, in repr form too) of any value, and bare ones
    of values of 6 characters or more (shorter ones would mask unrelated words), plus the
    redacted form of URLs the handlers registered as secret.
    """
    for value in sorted(_strings(entry, set()), key=len, reverse=True):
        if not value:
            continue
        shown = repr(value)
        for quoted in (shown, f"'{value}'", f'"{value}"'):
            message = message.replace(quoted, "'***'")
        if len(value) >= 6:
            message = message.replace(value, "***").replace(shown[1:-1], "***")
    return message


def _section(config: Mapping[str, Any], name: str, keys: frozenset[str]) -> dict[str, Any]:
    value = config.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"'{name}' must be a mapping, not {type(value).__name__}")
    unknown = set(value) - keys
    if unknown:
        raise ConfigError(f"unknown keys in '{name}': {_keys(unknown)}")
    return dict(value)


def _list(config: Mapping[str, Any], name: str) -> list[Any]:
    value = config.get(name)
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"'{name}' must be a list, not {type(value).__name__}")
    return list(value)


def _apply_quota(manager: LLMProviderManager, quota: Any) -> None:
    if not isinstance(quota, Mapping):
        raise ConfigError(f"a quota must be a mapping, not {type(quota).__name__}")
    unknown = set(quota) - _QUOTA_KEYS
    if unknown:
        raise ConfigError(f"unknown quota keys: {_keys(unknown)}")
    if "config_id" not in quota or ("limit" not in quota and "cost_limit_usd" not in quota):
        raise ConfigError(
            "a quota needs 'config_id' and 'limit', 'cost_limit_usd' or both "
            f"(it has keys {_keys(quota)})"
        )
    kwargs: dict[str, Any] = {}
    for key in ("period", "timezone", "provider", "parent", "cost_limit_usd", "cost_thresholds"):
        if key in quota:
            kwargs[key] = quota[key]
    if "thresholds" in quota:
        kwargs["thresholds"] = quota["thresholds"]
    try:
        manager.set_quota_limit_sync(
            quota["config_id"],
            quota.get("limit"),
            quota.get("alert_threshold_percent"),
            **kwargs,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(_masked(str(exc), quota)) from None


def parse_limit(item: str) -> tuple[str, int]:
    """One ``config_id=limit`` item of ``OTEL_LLM_QUOTA_LIMITS``; ConfigError if malformed."""
    config_id, sep, limit = item.strip().rpartition("=")
    if not sep:
        raise ConfigError("not config_id=limit")
    try:
        number = int(limit.strip())
    except ValueError:
        raise ConfigError("the limit is not an int") from None
    try:
        return check_config_id(config_id.strip()), check_limit(number)
    except (TypeError, ValueError) as exc:
        raise ConfigError(_masked(str(exc), config_id.strip())) from None


def parse_limits(raw: str) -> list[tuple[str, int]]:
    """``"a=100,b=200"`` gives pairs; ``"a=5e4"`` is refused (ConfigError naming the item)."""
    pairs: list[tuple[str, int]] = []
    for number, item in enumerate(_items(raw), 1):
        try:
            pairs.append(parse_limit(item))
        except ConfigError as exc:
            raise exc.locate(env.OTEL_LLM_QUOTA_LIMITS, f"item {number}") from None
    return pairs


def _items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _parse_thresholds(raw: str) -> list[float]:
    try:
        return [float(x) for x in _items(raw)]
    except ValueError:
        raise ConfigError(
            "not a comma-separated list of numbers", source=env.OTEL_LLM_QUOTA_THRESHOLDS
        ) from None


class _Collector:
    """Runs configuration steps; strict mode raises the first error, else logs and goes on.

    A step's error is located once, here (``ConfigError.locate``): the innermost step knows the
    key best, so an error is never prefixed twice. An exception that is not a ConfigError (a bug,
    or a value no check foresaw) becomes one naming only its type, so lenient loading always
    applies the rest of the configuration.
    """

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.errors: list[str] = []
        self.source: str | None = None

    def run(self, key: str | None, step: Callable[[], None], *, source: str | None = None) -> None:
        outer = self.source
        where = self.source = source if source is not None else outer  # for nested steps
        try:
            step()
        except ConfigError as exc:
            error = exc.locate(where, key)
        except Exception as exc:  # never let one unforeseen value stop the whole configuration
            error = ConfigError(f"unexpected {type(exc).__name__}", source=where, key=key)
        else:
            return
        finally:
            if source is not None:
                self.source = outer
        if self.strict:
            raise error from None
        self.errors.append(str(error))
        _logger.error("otel-llm-quota: %s (skipped)", error)


def load_config(
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    environment: bool = True,
    strict: bool = True,
    manager: LLMProviderManager | None = None,
    validate_only: bool = False,
) -> QuotaSetup:
    """Build a manager (quotas, handlers), processor options and monitor settings.

    ``config`` is a mapping or the path of a JSON/YAML file; with ``environment`` (default) the
    ``OTEL_LLM_QUOTA_*`` variables are read too (a file named by ``OTEL_LLM_QUOTA_CONFIG_FILE``
    when ``config`` is None). ``strict`` raises ``ConfigError`` on the first problem; otherwise
    each bad section or entry is logged, skipped and listed in ``QuotaSetup.errors``, and the
    rest (including the environment's settings when the file cannot be read) still applies.
    Every error names its file or variable and the key, never the values.

    ``validate_only`` checks the store URL and options without opening the store (no file
    created, no connection; ``otel-llm-quota check-config``): the manager then has no store.
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
        if isinstance(source, Mapping):
            parsed = dict(source)
        else:
            collect.source = str(source)
            parsed = read_config_file(source)
        unknown = set(parsed) - _SECTIONS
        if unknown:
            raise ConfigError(f"unknown top-level keys: {_keys(unknown)}", source=collect.source)
        data = parsed

    collect.run(None, read)

    manager_kwargs: dict[str, Any] = {}

    def manager_section() -> None:
        section = _section(data, "manager", _MANAGER_KEYS)
        if "send_resolved" in section:
            section["send_resolved"] = _bool(section["send_resolved"], "send_resolved")
        manager_kwargs.update(section)

    collect.run("manager", manager_section)

    def forecast_settings() -> None:
        # The forecast knobs live in 'monitor' but are the manager's: taken before it is built.
        monitor = data.get("monitor")
        if not isinstance(monitor, Mapping):
            return  # monitor_section reports it
        knobs = {k: monitor[k] for k in _FORECAST_KEYS if k in monitor}
        try:
            _forecast_settings(
                knobs.get("forecast"),
                knobs.get("forecast_window_seconds"),
                knobs.get("forecast_min_lead_seconds"),
                knobs.get("forecast_min_samples"),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(_masked(str(exc), knobs)) from None
        manager_kwargs.update(knobs)

    if manager is None:
        collect.run("monitor", forecast_settings)

    def store_section() -> None:
        raw = data.get("store")
        if raw is None or (environment and env_str(env.OTEL_LLM_QUOTA_STORE) is not None):
            return  # the environment variable wins over the file
        options: dict[str, Any] = {}
        if isinstance(raw, Mapping):
            options = dict(raw)
            url = options.pop("url", None)
            interval = options.pop("flush_interval_seconds", None)
            if interval is not None:
                manager_kwargs["flush_interval_seconds"] = interval
        else:
            url = raw
        open_configured_store(url, options, "'url'" if isinstance(raw, Mapping) else None)

    def env_store() -> None:
        raw = env_str(env.OTEL_LLM_QUOTA_STORE)
        if raw is not None:
            open_configured_store(raw, {}, None)

    def open_configured_store(url: object, options: dict[str, Any], key: str | None) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(
                f"must be a store URL (or a mapping with 'url'), not {type(url).__name__}",
                key=key,
            )
        try:
            if validate_only:
                _check_store(url, options)
            else:
                manager_kwargs["store"] = open_store(url, **options)
        except (TypeError, ValueError, ImportError, StoreError) as exc:
            # The stores name themselves by their redacted URL; a raw one never shows.
            reason = str(exc).replace(url, redact_url(url))
            raise ConfigError(_masked(reason, options), key=key) from None

    if manager is None:
        collect.run("store", store_section)
        if environment:
            collect.run(None, env_store, source=env.OTEL_LLM_QUOTA_STORE)
        manager_kwargs.setdefault("store", False)  # none taken (or none usable): this process only
        try:
            manager = LLMProviderManager(**manager_kwargs)
        except (TypeError, ValueError) as exc:
            error = ConfigError(_masked(str(exc), manager_kwargs))
            collect.run("manager", _raiser(error))
            manager = LLMProviderManager(store=manager_kwargs["store"])
    setup = QuotaSetup(manager=manager)

    def monitor_section() -> None:
        section = _section(data, "monitor", _MONITOR_KEYS)
        setup.monitor = _bool(section.get("enabled", True), "enabled")
        if "interval_seconds" in section:
            try:
                setup.monitor_interval_seconds = check_positive_seconds(
                    "interval_seconds", section["interval_seconds"]
                )
            except (TypeError, ValueError) as exc:
                raise ConfigError(_masked(str(exc), section)) from None

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
                        "not an int", source=env.OTEL_LLM_QUOTA_MAX_TRACKED_RESPONSES
                    ) from None
        if "default_config_id" in section:
            try:
                check_config_id(section["default_config_id"])
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    _masked(str(exc), section), key="processor.default_config_id"
                ) from None
        capacity_value = section.get("max_tracked_responses", 1)
        if type(capacity_value) is not int or capacity_value < 1:
            raise ConfigError("'processor.max_tracked_responses' must be a positive int")
        setup.processor_options.update(section)

    collect.run("monitor", monitor_section)
    collect.run("processor", processor_section)

    def quotas() -> None:
        entries = list(enumerate(_list(data, "quotas")))
        problems = _parent_problems(entries, setup.manager)
        for index, quota in entries:  # in the file's order
            if index in problems:
                key = _entry_key("quotas", index, quota, "config_id")
                collect.run(key, _raiser(ConfigError(problems[index])))
        for index, quota in _parents_first(entries):  # any order in the file: parents first
            if index not in problems:
                key = _entry_key("quotas", index, quota, "config_id")
                collect.run(key, functools.partial(_apply_quota, setup.manager, quota))

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

        def apply(item: str) -> None:
            config_id, limit = parse_limit(item)
            known = setup.manager.ledger.get(config_id)
            kept: dict[str, Any] = {}
            if known is not None:
                if known.parent is not None:
                    kept["parent"] = known.parent
                if known.cost_limit_usd is not None:
                    kept["cost_limit_usd"] = known.cost_limit_usd
                    kept["cost_thresholds"] = list(known.cost_thresholds)
            # A token limit from the environment wins over the file's; the file's parent and
            # cost limit stay.
            _apply_quota(setup.manager, {**quota, **kept, "config_id": config_id, "limit": limit})

        for number, item in enumerate(_items(raw), 1):  # one bad item skips only itself
            collect.run(f"item {number}", functools.partial(apply, item))

    def prices() -> None:
        entries = data.get("prices")
        if entries is None:
            return
        try:
            setup.manager.set_prices(entries)
        except (TypeError, ValueError) as exc:
            raise ConfigError(_masked(str(exc), entries)) from None

    collect.run("prices", prices)
    collect.run("quotas", quotas)
    if environment:
        collect.run(None, env_quotas, source=env.OTEL_LLM_QUOTA_LIMITS)

    def rules() -> None:
        built: list[ConfigRule] = []
        for index, rule in enumerate(_list(data, "rules")):
            key = _entry_key("rules", index, rule, "config_id")
            if not isinstance(rule, Mapping):
                raise ConfigError(f"a rule must be a mapping, not {type(rule).__name__}", key=key)
            try:
                built.append(ConfigRule.from_dict(rule))
            except (TypeError, ValueError) as exc:
                raise ConfigError(_masked(str(exc), rule), key=key) from None
        if built:
            setup.processor_options["rules"] = built

    collect.run("rules", rules)

    def add_handler(spec: Any) -> None:
        handler = build_handler(spec)
        try:
            setup.manager.add_alert_handler(handler)
        except (TypeError, ValueError) as exc:  # e.g. a factory that built a non-handler
            type_name = spec if isinstance(spec, str) else spec.get("type")
            raise ConfigError(
                f"handler type {_shown_type(str(type_name))}: {_masked(str(exc), spec)}"
            ) from None

    def handlers() -> None:
        for index, spec in enumerate(_list(data, "handlers")):
            collect.run(f"handlers[{index}]", functools.partial(add_handler, spec))

    def env_handlers() -> None:
        raw = env_str(env.OTEL_LLM_QUOTA_ALERT_HANDLERS)
        for number, type_name in enumerate(_items(raw or ""), 1):
            collect.run(f"item {number}", functools.partial(add_handler, type_name))

    collect.run("handlers", handlers)
    if environment:
        collect.run(None, env_handlers, source=env.OTEL_LLM_QUOTA_ALERT_HANDLERS)
    setup.errors = collect.errors
    return setup


def _check_store(url: str, options: dict[str, Any]) -> None:
    """Raise what ``open_store(url, **options)`` would for a bad URL or option, without opening
    the store: the scheme, the SQLite path and the options' names are checked, nothing else."""
    from otel_llm_quota.stores._url import _REDIS_SCHEMES

    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from otel_llm_quota.stores._sqlite import SQLiteStore, _path_from_url

        path, query = _path_from_url(url)
        inspect.signature(SQLiteStore).bind(path, **{**query, **options})
    elif scheme in _REDIS_SCHEMES:
        try:
            from otel_llm_quota.stores._redis import RedisStore
        except ImportError as exc:  # redis-py missing
            raise ImportError(
                "the Redis store needs redis-py: pip install 'otel-llm-quota[redis]'"
            ) from exc
        inspect.signature(RedisStore).bind(url, **options)
    elif scheme == "memory":
        inspect.signature(MemoryStore).bind(**options)
    else:
        open_store(url)  # raises the unknown-scheme ValueError before opening anything


def _bool(value: object, name: str) -> bool:
    try:
        return check_bool(name, value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(_masked(str(exc), value)) from None


def _entry_key(section: str, index: int, entry: object, name_key: str) -> str:
    """``quotas[0] ('openai')``: where an entry is, with its config id when it has a usable one.

    (Handler entries are named by position only: their messages name the type.)
    """
    key = f"{section}[{index}]"
    if isinstance(entry, Mapping):
        name = entry.get(name_key)
        if isinstance(name, str) and name.isprintable() and len(name) <= MAX_CONFIG_ID_LENGTH:
            return f"{key} ({name!r})"
    return key


def _quota_link(quota: object) -> tuple[str, str | None] | None:
    """``(config_id, parent)`` of a quota entry, or None if it has no usable ones (then the
    entry's own checks report it)."""
    if not isinstance(quota, Mapping):
        return None
    config_id, parent = quota.get("config_id"), quota.get("parent")
    if not isinstance(config_id, str) or (parent is not None and not isinstance(parent, str)):
        return None
    return config_id, parent


def _parent_problems(entries: list[tuple[int, Any]], manager: LLMProviderManager) -> dict[int, str]:
    """Entries (by index) naming a parent that is neither declared nor known, or in a cycle."""
    parents: dict[str, str | None] = {}
    for _, quota in entries:
        link = _quota_link(quota)
        if link is not None:
            parents[link[0]] = link[1]
    problems: dict[int, str] = {}
    for index, quota in entries:
        link = _quota_link(quota)
        if link is None or link[1] is None:
            continue
        config_id, parent = link
        if parent not in parents and parent not in manager.ledger:
            problems[index] = f"parent {parent!r} is not a declared quota"
            continue
        path = [config_id]
        step: str | None = parent
        while step is not None and step in parents and step not in path:
            path.append(step)
            step = parents[step]
        if step == config_id:
            shown = " -> ".join(repr(p) for p in [*path, config_id])
            problems[index] = f"parent {parent!r} makes a cycle: {shown}"
    return problems


def _parents_first(entries: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """The quota entries in an order where each parent comes before its children (stable
    otherwise; entries in a cycle or without a usable id keep their place at the end)."""
    by_id: dict[str, int] = {}
    for position, (_, quota) in enumerate(entries):
        link = _quota_link(quota)
        if link is not None:
            by_id.setdefault(link[0], position)
    done: set[int] = set()
    ordered: list[tuple[int, Any]] = []

    def place(position: int, visiting: set[int]) -> None:
        if position in done or position in visiting:
            return
        visiting.add(position)
        link = _quota_link(entries[position][1])
        if link is not None and link[1] is not None and link[1] in by_id:
            place(by_id[link[1]], visiting)
        done.add(position)
        ordered.append(entries[position])

    for position in range(len(entries)):
        place(position, set())
    return ordered


def _raiser(exc: ConfigError) -> Callable[[], None]:
    def step() -> None:
        raise exc

    return step
