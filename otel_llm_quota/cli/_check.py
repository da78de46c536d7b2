"""``otel-llm-quota check-config FILE``: validate a YAML/JSON configuration, for CI.

The file is loaded as ``load_config(FILE, environment=False, strict=False)`` loads it, with
``validate_only``: the store URL is checked but never opened (no file created, no connection).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from otel_llm_quota.cli._app import cli

__all__ = ["check_config"]


@cli.command("check-config")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def check_config(file: Path) -> None:
    """Validate the configuration FILE: each error on its own line and exit 1, else OK and 0."""
    from otel_llm_quota import load_config

    config_logger = logging.getLogger("otel_llm_quota._config")
    disabled = config_logger.disabled
    config_logger.disabled = True  # each error is printed below, once
    try:
        setup = load_config(file, environment=False, strict=False, validate_only=True)
    finally:
        config_logger.disabled = disabled
    try:
        if setup.errors:
            for error in setup.errors:
                click.echo(f"Error: {error}", err=True)
            raise SystemExit(1)
        quotas = len(setup.manager.ledger.get_all())
        rules = len(setup.processor_options.get("rules", ()))
        handlers = len(setup.manager.alert_handlers)
        click.echo(f"OK: {quotas} quotas, {rules} rules, {handlers} handlers")
    finally:
        setup.manager.close()
