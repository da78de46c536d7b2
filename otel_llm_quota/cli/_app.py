"""The click group of ``otel-llm-quota`` and what every command shares.

Every error is one line naming what is wrong (click's ``Error: ...``) and a non-zero exit; an
unforeseen exception becomes such a line too, unless ``--debug`` asks for its traceback.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from otel_llm_quota import environment_variables as env

__all__ = [
    "CliError",
    "check_existing_store",
    "cli",
    "main",
    "open_manager",
    "refuse_memory_store",
    "store_url",
]

_PACKAGE_LOGGER = "otel_llm_quota"
_LOGGING_COMMANDS = frozenset({"serve"})
"""Long-running commands whose log is the library's (not silenced)."""


class CliError(click.ClickException):
    """A one-line error naming what is wrong; exits with status 1."""


class _Group(click.Group):
    """A group that turns any exception of a command into a one-line error (unless --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            message = str(exc).splitlines()[0] if str(exc) else ""
            name = type(exc).__name__
            raise CliError(f"{name}: {message}" if message else name) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and the library's log messages.")
@click.version_option(package_name="otel-llm-quota", prog_name="otel-llm-quota")
def cli(debug: bool) -> None:
    """Look at and administer LLM token quotas kept in a store (SQLite, Redis)."""
    logger = logging.getLogger(_PACKAGE_LOGGER)
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
        return
    if click.get_current_context().invoked_subcommand in _LOGGING_COMMANDS:
        # A service: its log is where the `logging` alert handler, store outages and handler
        # failures are told. To stderr at INFO, unless the app configured logging itself.
        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
        return
    # The commands report problems themselves, in one line; the library's warnings (e.g. "no
    # answer from the store yet") would repeat them through logging's last resort. Restored when
    # the command ends (the CLI may run inside another program, e.g. click's test runner).
    silencer = logging.NullHandler()
    propagate = logger.propagate
    logger.addHandler(silencer)
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(silencer)
        logger.propagate = propagate

    click.get_current_context().call_on_close(restore)


def store_url(given: str | None) -> str:
    """The store URL from ``--store``, else ``OTEL_LLM_QUOTA_STORE``, else a CliError."""
    url = given if given is not None else os.environ.get(env.OTEL_LLM_QUOTA_STORE, "").strip()
    if not url:
        raise CliError(
            f"no store given: pass --store URL (e.g. sqlite:////path/quota.db) "
            f"or set {env.OTEL_LLM_QUOTA_STORE}"
        )
    return url


def refuse_memory_store(url: str) -> None:
    """A CliError for ``memory://``: a store inside one process, so no command can see or
    change what the apps keep there."""
    if url.partition(":")[0].lower() == "memory":
        raise CliError(
            "memory:// is a store inside one process: give the store the apps share "
            "(sqlite:///path or redis://...)"
        )


def check_existing_store(url: str) -> None:
    """A CliError unless ``url`` names a store that may already hold quotas: never ``memory://``
    (this process's only), never a SQLite file that does not exist (opening it would create an
    empty one: a typo in the path would show "no quotas" and leave a stray file)."""
    from otel_llm_quota.stores import redact_url

    refuse_memory_store(url)
    if url.partition(":")[0].lower() == "sqlite":
        from otel_llm_quota.stores._sqlite import _path_from_url

        try:
            path = _path_from_url(url)[0]
        except ValueError:
            return  # open_manager reports a bad URL
        if not os.path.exists(path):
            raise CliError(
                f"store {redact_url(url)}: no such file {os.path.abspath(path)!r} "
                "(the apps create it when they first record usage)"
            )


def open_manager(
    url: str, *, flush_interval_seconds: float = 60.0, must_exist: bool = False
) -> Any:
    """A ``LLMProviderManager`` on the store at ``url``, with the fleet's state loaded.

    Raises CliError when the URL is bad or the store did not answer its first sync (the manager
    itself only logs that and retries in the background), and with ``must_exist`` when the store
    cannot hold quotas yet (see ``check_existing_store``).
    """
    from otel_llm_quota import LLMProviderManager
    from otel_llm_quota.stores import StoreError, redact_url

    if must_exist:
        check_existing_store(url)
    try:
        manager = LLMProviderManager(store=url, flush_interval_seconds=flush_interval_seconds)
    except (ValueError, TypeError, ImportError, StoreError) as exc:
        raise CliError(f"store {redact_url(url)}: {exc}") from None
    sync = manager.store_sync
    if sync is None or sync.last_success is None:  # the first sync failed
        manager.close()
        raise CliError(f"store {redact_url(url)} is unreachable")
    return manager


def main() -> None:
    """The console script ``otel-llm-quota``."""
    cli(prog_name="otel-llm-quota")
