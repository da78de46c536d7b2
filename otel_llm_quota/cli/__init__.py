"""The ``otel-llm-quota`` command line (``python -m otel_llm_quota``; needs the ``cli`` extra).

Kept out of ``import otel_llm_quota``: click and rich are imported only by this package.
"""

from otel_llm_quota.cli import (  # noqa: F401  (each registers its commands)
    _admin,
    _check,
    _demo,
    _doctor,
    _serve,
    _status,
)
from otel_llm_quota.cli._app import cli, main

__all__ = ["cli", "main"]
