"""``otel-llm-quota serve``: the OTLP/HTTP quota service (needs the ``serve`` extra).

Configured like the zero-code path (``--config FILE`` or ``OTEL_LLM_QUOTA_CONFIG_FILE``, the
``OTEL_LLM_QUOTA_*`` variables), but strictly: a bad config file stops the service at start, with
the error, instead of being logged and skipped. ``--store`` wins over ``OTEL_LLM_QUOTA_STORE``.
Once listening it prints one line, ``listening on http://HOST:PORT``, to stdout.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import click

from otel_llm_quota import environment_variables as env
from otel_llm_quota.cli._app import CliError, cli

__all__ = ["serve"]


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=4318, show_default=True, type=click.IntRange(0, 65535))
@click.option("--store", metavar="URL", help=f"Store URL (else {env.OTEL_LLM_QUOTA_STORE}).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help=f"Config file (else {env.OTEL_LLM_QUOTA_CONFIG_FILE}).",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1),
    help=f"Largest request body (else {env.OTEL_LLM_QUOTA_SERVE_MAX_BODY_BYTES}, 16 MiB).",
)
@click.option(
    "--max-decompressed-bytes",
    type=click.IntRange(1),
    help=f"Largest gunzipped body (else {env.OTEL_LLM_QUOTA_SERVE_MAX_DECOMPRESSED_BYTES}, 64MiB).",
)
@click.option(
    "--max-concurrent-requests",
    type=click.IntRange(1),
    help=f"Requests handled at once; more get 503 (else "
    f"{env.OTEL_LLM_QUOTA_SERVE_MAX_CONCURRENT_REQUESTS}, 8).",
)
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--metrics/--no-metrics", default=True, show_default=True, help="GET /metrics.")
@click.option(
    "--otlp-metrics",
    is_flag=True,
    help="Also push the metrics over OTLP/HTTP (the OTEL_EXPORTER_OTLP_* variables).",
)
def serve(
    host: str,
    port: int,
    store: str | None,
    config_file: Path | None,
    max_body_bytes: int | None,
    max_decompressed_bytes: int | None,
    max_concurrent_requests: int | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    metrics: bool,
    otlp_metrics: bool,
) -> None:
    """Receive OTLP/HTTP traces (POST /v1/traces) and count their LLM token usage into quotas."""
    try:
        from otel_llm_quota.serve import Limits, QuotaService, run_service
    except ImportError as exc:
        raise CliError(
            f"serve needs the serve extra: pip install 'otel-llm-quota[serve]' ({exc.name})"
        ) from None
    from otel_llm_quota import ConfigError, load_config

    if (tls_cert is None) != (tls_key is None):
        raise CliError("--tls-cert and --tls-key go together")
    ssl_context = None
    if tls_cert is not None and tls_key is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"TLS certificate or key: {exc}") from None
    limits = Limits.from_env(max_body_bytes, max_decompressed_bytes, max_concurrent_requests)
    from otel_llm_quota.serve._logs import LogSetupError, logger_provider_from_env

    try:  # for the otel_log handler: OTEL_LOGS_EXPORTER, as with zero-code
        logger_provider = logger_provider_from_env()
    except LogSetupError as exc:
        raise CliError(str(exc)) from None
    if logger_provider is not None:
        from opentelemetry._logs import set_logger_provider

        set_logger_provider(logger_provider)
    if store is not None:
        # load_config reads it, as the zero-code path does
        os.environ[env.OTEL_LLM_QUOTA_STORE] = store
    try:
        setup = load_config(config_file, strict=True)
    except ConfigError as exc:
        message = str(exc)
        if store is not None and exc.source == env.OTEL_LLM_QUOTA_STORE:
            message = message.replace(env.OTEL_LLM_QUOTA_STORE, "--store", 1)  # what was typed
        raise CliError(message) from None
    token = os.environ.get(env.OTEL_LLM_QUOTA_SERVE_TOKEN) or None
    try:
        service = QuotaService(
            setup, limits=limits, token=token, metrics=metrics, otlp_metrics=otlp_metrics
        )
    except BaseException:
        setup.manager.close()
        raise

    def ready(url: str) -> None:
        click.echo(f"listening on {url}", nl=True)

    try:
        asyncio.run(run_service(service, host, port, ssl_context=ssl_context, ready=ready))
    finally:
        if logger_provider is not None:  # export the last alert events
            logger_provider.shutdown()
