"""A FastAPI app whose worker processes share one quota through a SQLite store.

Every worker (``uvicorn --workers 2``) opens its own ``LLMProviderManager`` on the same SQLite
file: each counts its own requests, the store adds them up, and the fleet's monitor sends each
alert once (one worker wins the claim). ``POST /generate`` stands for an LLM call: it records the
call's token usage as an instrumentation's span would (see examples/zero_code/ for spans), and
answers with the worker's pid and the fleet total it sees. See README.md beside this file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from otel_llm_quota import LLMProviderManager
from otel_llm_quota.handlers import LoggingAlertHandler

STORE = os.environ.get("OTEL_LLM_QUOTA_STORE", "sqlite:///fastapi_quota.db")
CONFIG_ID = "chat-fleet"
INPUT_TOKENS, OUTPUT_TOKENS = 300, 100  # what each "LLM call" uses

logging.basicConfig(level=logging.WARNING, format="%(levelname)s [pid %(process)d] %(message)s")
state: dict[str, LLMProviderManager] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One manager per worker process, all on the same store. aclose() at shutdown flushes this
    # worker's last usage to the store (also on SIGTERM/Ctrl-C of uvicorn).
    async with LLMProviderManager(store=STORE, flush_interval_seconds=0.5) as manager:
        # Every worker sets the same limit at start-up: the last write wins, all agree.
        await manager.set_quota_limit(CONFIG_ID, 10_000, thresholds=(50, 90), period="day")
        manager.add_alert_handler(LoggingAlertHandler())
        await manager.start_monitoring(interval=1)
        state["manager"] = manager
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/generate")
async def generate() -> dict[str, Any]:
    manager = state["manager"]
    manager.record_usage(
        CONFIG_ID, provider="openai", input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS
    )
    quota = await manager.get_quota_usage(CONFIG_ID)
    return {"pid": os.getpid(), "fleet_tokens": quota.total_tokens if quota else None}
