"""Environment variables read by otel-llm-quota.

Every setting follows the same order: a constructor argument wins, else the environment variable,
else the documented default. A malformed value logs a warning and falls back to the default; it
never stops the application.
"""

from __future__ import annotations

from typing import Final

OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS: Final = "OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS"
"""
.. envvar:: OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS

Seconds before an alert that is still firing is notified again, at most ``315360000`` (ten
years). Default: ``3600``.
"""

OTEL_LLM_QUOTA_HANDLER_TIMEOUT_SECONDS: Final = "OTEL_LLM_QUOTA_HANDLER_TIMEOUT_SECONDS"
"""
.. envvar:: OTEL_LLM_QUOTA_HANDLER_TIMEOUT_SECONDS

Seconds one alert-handler call may take before it is abandoned and counted as failed.
Default: ``10``.
"""

OTEL_LLM_QUOTA_SHUTDOWN_TIMEOUT_SECONDS: Final = "OTEL_LLM_QUOTA_SHUTDOWN_TIMEOUT_SECONDS"
"""
.. envvar:: OTEL_LLM_QUOTA_SHUTDOWN_TIMEOUT_SECONDS

Seconds that stopping the monitor and closing the manager (``stop_monitoring``, ``aclose``,
``close``, at interpreter exit too) may take in all: the final pass's deliveries and the
handlers' ``aclose()``. What is still running then is abandoned (handler threads are daemons).
Default: ``30``.
"""

OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS: Final = "OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS"
"""
.. envvar:: OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS

Seconds between two monitor passes when ``start_monitoring`` is given no interval. The monitor
also wakes at once when usage crosses a threshold. At least ``0.1``. Default: ``60``.
"""

OTEL_LLM_QUOTA_TIMEZONE: Final = "OTEL_LLM_QUOTA_TIMEZONE"
"""
.. envvar:: OTEL_LLM_QUOTA_TIMEZONE

IANA time zone (``Europe/Paris``) in which calendar periods (hour, day, week, month) start.
Default: ``UTC``.
"""

OTEL_LLM_QUOTA_SEND_RESOLVED: Final = "OTEL_LLM_QUOTA_SEND_RESOLVED"
"""
.. envvar:: OTEL_LLM_QUOTA_SEND_RESOLVED

``true`` or ``false``: whether handlers are told when an alert ends (period reset, raised limit).
Default: ``true``.
"""

OTEL_LLM_QUOTA_MAX_CONFIGS: Final = "OTEL_LLM_QUOTA_MAX_CONFIGS"
"""
.. envvar:: OTEL_LLM_QUOTA_MAX_CONFIGS

How many quota configs without a limit (the ones spans and usage create, one per new config id
or provider) a manager keeps. Beyond it, the usage of a new id is counted in the reserved config
``_overflow`` (nothing is lost; one warning is logged and ``llm.quota.overflow.records`` counts
those records), the way the OpenTelemetry SDK's metric cardinality limit works. Configs given a
limit are not counted and never refused. Default: ``2000``, the OpenTelemetry SDK's default
cardinality limit per instrument (raise both together: ``quota_metric_views(max_configs)``).
"""

OTEL_LLM_QUOTA_IDLE_CONFIG_SECONDS: Final = "OTEL_LLM_QUOTA_IDLE_CONFIG_SECONDS"
"""
.. envvar:: OTEL_LLM_QUOTA_IDLE_CONFIG_SECONDS

Seconds after which a quota config without a limit that has had no usage is removed (it comes
back, from zero, with its next usage). Default: unset, configs are kept.
"""

# -- alert handlers (otel_llm_quota.handlers) ------------------------------------------------
# Secrets (URLs with tokens, keys, passwords) are read here only when the argument is not given,
# and never appear in logs, exception messages or reprs.

OTEL_LLM_QUOTA_WEBHOOK_URL: Final = "OTEL_LLM_QUOTA_WEBHOOK_URL"
"""
.. envvar:: OTEL_LLM_QUOTA_WEBHOOK_URL

URL the ``WebhookAlertHandler`` posts alerts to (treated as a secret: it may carry a token).
"""

OTEL_LLM_QUOTA_WEBHOOK_SECRET: Final = "OTEL_LLM_QUOTA_WEBHOOK_SECRET"
"""
.. envvar:: OTEL_LLM_QUOTA_WEBHOOK_SECRET

Key of the HMAC-SHA256 signature the ``WebhookAlertHandler`` puts in the
``X-OTel-LLM-Quota-Signature`` header. Unset: requests are not signed.
"""

OTEL_LLM_QUOTA_SLACK_WEBHOOK_URL: Final = "OTEL_LLM_QUOTA_SLACK_WEBHOOK_URL"
"""
.. envvar:: OTEL_LLM_QUOTA_SLACK_WEBHOOK_URL

Slack incoming-webhook URL of the ``SlackAlertHandler`` (a secret).
"""

OTEL_LLM_QUOTA_ALERTMANAGER_URL: Final = "OTEL_LLM_QUOTA_ALERTMANAGER_URL"
"""
.. envvar:: OTEL_LLM_QUOTA_ALERTMANAGER_URL

Base URL of the Alertmanager the ``AlertmanagerAlertHandler`` posts to
(``http://alertmanager:9093``; ``/api/v2/alerts`` is appended).
"""

OTEL_LLM_QUOTA_SMTP_HOST: Final = "OTEL_LLM_QUOTA_SMTP_HOST"
"""
.. envvar:: OTEL_LLM_QUOTA_SMTP_HOST

SMTP server of the ``EmailAlertHandler``. Default: ``localhost``.
"""

OTEL_LLM_QUOTA_SMTP_PORT: Final = "OTEL_LLM_QUOTA_SMTP_PORT"
"""
.. envvar:: OTEL_LLM_QUOTA_SMTP_PORT

SMTP port. Default: ``587`` with STARTTLS, ``465`` with TLS, ``25`` without encryption.
"""

OTEL_LLM_QUOTA_SMTP_SECURITY: Final = "OTEL_LLM_QUOTA_SMTP_SECURITY"
"""
.. envvar:: OTEL_LLM_QUOTA_SMTP_SECURITY

``starttls`` (upgrade a plain connection), ``tls`` (implicit TLS) or ``none``.
Default: ``starttls``.
"""

OTEL_LLM_QUOTA_SMTP_USERNAME: Final = "OTEL_LLM_QUOTA_SMTP_USERNAME"
"""
.. envvar:: OTEL_LLM_QUOTA_SMTP_USERNAME

SMTP AUTH user name. Unset: no authentication.
"""

OTEL_LLM_QUOTA_SMTP_PASSWORD: Final = "OTEL_LLM_QUOTA_SMTP_PASSWORD"
"""
.. envvar:: OTEL_LLM_QUOTA_SMTP_PASSWORD

SMTP AUTH password (a secret).
"""

OTEL_LLM_QUOTA_EMAIL_FROM: Final = "OTEL_LLM_QUOTA_EMAIL_FROM"
"""
.. envvar:: OTEL_LLM_QUOTA_EMAIL_FROM

Sender address of alert e-mails.
"""

OTEL_LLM_QUOTA_EMAIL_TO: Final = "OTEL_LLM_QUOTA_EMAIL_TO"
"""
.. envvar:: OTEL_LLM_QUOTA_EMAIL_TO

Recipients of alert e-mails, comma-separated.
"""

OTEL_LLM_QUOTA_ENABLED: Final = "OTEL_LLM_QUOTA_ENABLED"
"""
.. envvar:: OTEL_LLM_QUOTA_ENABLED

``true`` or ``false``: whether ``opentelemetry-instrument`` attaches the quota span processor
(the ``opentelemetry_post_instrument`` entry point). Default: ``true``.
"""

OTEL_LLM_QUOTA_METRICS_ENABLED: Final = "OTEL_LLM_QUOTA_METRICS_ENABLED"
"""
.. envvar:: OTEL_LLM_QUOTA_METRICS_ENABLED

``true`` or ``false``: whether an ``LLMProviderManager`` created without ``metrics=`` (the default
manager of ``instrument()`` and ``opentelemetry-instrument`` too) reports its quotas as
``llm.quota.*`` metrics through its ``meter_provider`` or the global meter provider.
Default: ``true``.
"""

OTEL_LLM_QUOTA_CONFIG_FILE: Final = "OTEL_LLM_QUOTA_CONFIG_FILE"
"""
.. envvar:: OTEL_LLM_QUOTA_CONFIG_FILE

Path of a JSON or YAML (``.yaml``/``.yml``, needs the ``yaml`` extra) file configuring the
default manager: quotas, config-id rules, alert handlers, monitor and processor settings (see
the README, "From spans to quotas"). Default: none.
"""

OTEL_LLM_QUOTA_LIMITS: Final = "OTEL_LLM_QUOTA_LIMITS"
"""
.. envvar:: OTEL_LLM_QUOTA_LIMITS

Quotas as ``config_id=limit`` pairs separated by commas (``openai=1000000,anthropic=500000``),
applied after the config file's (so they win for the same id). Default: none.
"""

OTEL_LLM_QUOTA_THRESHOLDS: Final = "OTEL_LLM_QUOTA_THRESHOLDS"
"""
.. envvar:: OTEL_LLM_QUOTA_THRESHOLDS

Alert thresholds in percent, separated by commas (``50,80,95``), for the quotas of
``OTEL_LLM_QUOTA_LIMITS``. Default: ``80``.
"""

OTEL_LLM_QUOTA_PERIOD: Final = "OTEL_LLM_QUOTA_PERIOD"
"""
.. envvar:: OTEL_LLM_QUOTA_PERIOD

Period of the quotas of ``OTEL_LLM_QUOTA_LIMITS``: ``hour``, ``day``, ``week``, ``month`` or
``none``. Default: ``month``.
"""

OTEL_LLM_QUOTA_ALERT_HANDLERS: Final = "OTEL_LLM_QUOTA_ALERT_HANDLERS"
"""
.. envvar:: OTEL_LLM_QUOTA_ALERT_HANDLERS

Alert handlers, separated by commas: built-in names (``logging``, ``otel_log``) or import strings
``package.module:factory`` (called without arguments). Added to the config file's handlers.
Default: none.
"""

OTEL_LLM_QUOTA_DEFAULT_CONFIG_ID: Final = "OTEL_LLM_QUOTA_DEFAULT_CONFIG_ID"
"""
.. envvar:: OTEL_LLM_QUOTA_DEFAULT_CONFIG_ID

Config id of LLM spans that carry no provider and that no ``quota_config`` block, rule or
resolver placed. Default: ``unknown``.
"""

OTEL_LLM_QUOTA_MAX_TRACKED_RESPONSES: Final = "OTEL_LLM_QUOTA_MAX_TRACKED_RESPONSES"
"""
.. envvar:: OTEL_LLM_QUOTA_MAX_TRACKED_RESPONSES

How many response ids (and nesting marks) the span processor remembers to count each LLM response
once. Default: ``10000``.
"""

# -- shared state (otel_llm_quota.stores) ------------------------------------------------------

OTEL_LLM_QUOTA_STORE: Final = "OTEL_LLM_QUOTA_STORE"
"""
.. envvar:: OTEL_LLM_QUOTA_STORE

Where quota state is kept: ``memory://``, ``sqlite:///quota.db`` (relative path),
``sqlite:////var/lib/app/quota.db`` (absolute), ``redis://[user:pass@]host:6379/0``,
``rediss://...``, ``unix:///path/redis.sock``, ``redis+cluster://host:port``. A secret: it is
logged only with its password redacted. Unset: state stays in the process.
"""

OTEL_LLM_QUOTA_FLUSH_INTERVAL_SECONDS: Final = "OTEL_LLM_QUOTA_FLUSH_INTERVAL_SECONDS"
"""
.. envvar:: OTEL_LLM_QUOTA_FLUSH_INTERVAL_SECONDS

Seconds between two flushes of usage to the store (and refreshes of the fleet's totals). What a
process killed with SIGKILL can lose is at most about one interval of its own usage.
Default: ``1``.
"""

OTEL_LLM_QUOTA_STORE_KEY_PREFIX: Final = "OTEL_LLM_QUOTA_STORE_KEY_PREFIX"
"""
.. envvar:: OTEL_LLM_QUOTA_STORE_KEY_PREFIX

Prefix of every Redis key, so several applications can share one Redis. Default: ``llm_quota:``.
"""

OTEL_LLM_QUOTA_FLUSH_ON_SIGTERM: Final = "OTEL_LLM_QUOTA_FLUSH_ON_SIGTERM"
"""
.. envvar:: OTEL_LLM_QUOTA_FLUSH_ON_SIGTERM

With a store: ``true`` turns SIGTERM into a normal exit (``SystemExit(143)``) when the
application has no SIGTERM handler of its own, so the final flush runs (Python's default ends
the process without it). ``false`` leaves SIGTERM alone. Default: ``true``.
"""

OTEL_LLM_QUOTA_FORECAST_ENABLED: Final = "OTEL_LLM_QUOTA_FORECAST_ENABLED"
"""
.. envvar:: OTEL_LLM_QUOTA_FORECAST_ENABLED

Forecast alerts (reason ``forecast``): the monitor samples each limited config's usage and
notifies once per period when, at the current burn rate, it will pass its limit before the
reset. ``true``/``false``. Default: ``true``.
"""

OTEL_LLM_QUOTA_FORECAST_WINDOW_SECONDS: Final = "OTEL_LLM_QUOTA_FORECAST_WINDOW_SECONDS"
"""
.. envvar:: OTEL_LLM_QUOTA_FORECAST_WINDOW_SECONDS

The burn-rate estimator's sliding window in seconds (also used by ``time_to_exhaustion``).
Default: a tenth of each config's period.
"""

OTEL_LLM_QUOTA_FORECAST_MIN_LEAD_SECONDS: Final = "OTEL_LLM_QUOTA_FORECAST_MIN_LEAD_SECONDS"
"""
.. envvar:: OTEL_LLM_QUOTA_FORECAST_MIN_LEAD_SECONDS

A forecast fires only while the projected exhaustion is at least this far away (later, the
threshold alerts speak). Default: a twentieth of each config's period.
"""

OTEL_LLM_QUOTA_FORECAST_MIN_SAMPLES: Final = "OTEL_LLM_QUOTA_FORECAST_MIN_SAMPLES"
"""
.. envvar:: OTEL_LLM_QUOTA_FORECAST_MIN_SAMPLES

Usage samples (the window's start included) a forecast needs at least, beside a full window of
data. Default: ``4``.
"""

# -- the OTLP service (otel-llm-quota serve) -----------------------------------------------------

OTEL_LLM_QUOTA_SERVE_TOKEN: Final = "OTEL_LLM_QUOTA_SERVE_TOKEN"
"""
.. envvar:: OTEL_LLM_QUOTA_SERVE_TOKEN

``otel-llm-quota serve``: when set, every request but ``GET /healthz`` must carry
``Authorization: Bearer <this token>`` (compared in constant time); others get 401. A secret:
never logged. Unset: no authentication (the service binds to 127.0.0.1 by default).
"""

OTEL_LLM_QUOTA_SERVE_MAX_BODY_BYTES: Final = "OTEL_LLM_QUOTA_SERVE_MAX_BODY_BYTES"
"""
.. envvar:: OTEL_LLM_QUOTA_SERVE_MAX_BODY_BYTES

``otel-llm-quota serve``: the largest request body accepted, as sent (compressed); larger ones
get 413. Default: ``16777216`` (16 MiB).
"""

OTEL_LLM_QUOTA_SERVE_MAX_DECOMPRESSED_BYTES: Final = "OTEL_LLM_QUOTA_SERVE_MAX_DECOMPRESSED_BYTES"
"""
.. envvar:: OTEL_LLM_QUOTA_SERVE_MAX_DECOMPRESSED_BYTES

``otel-llm-quota serve``: the largest gzip-decompressed body; inflating stops there and the
request gets 413 (a gzip bomb is never expanded in full). Default: ``67108864`` (64 MiB).
"""

OTEL_LLM_QUOTA_SERVE_MAX_CONCURRENT_REQUESTS: Final = "OTEL_LLM_QUOTA_SERVE_MAX_CONCURRENT_REQUESTS"
"""
.. envvar:: OTEL_LLM_QUOTA_SERVE_MAX_CONCURRENT_REQUESTS

``otel-llm-quota serve``: export requests handled at once; more get 503 with ``Retry-After``
(OTLP exporters retry them). Bounds memory at about this many times the two size limits.
Default: ``8``.
"""
