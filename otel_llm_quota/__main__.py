"""``python -m otel_llm_quota``: the ``otel-llm-quota`` command line."""

from otel_llm_quota.cli import main

if __name__ == "__main__":
    main()
