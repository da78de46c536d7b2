"""The README's runnable snippets run as written (docs that match the code)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block_after(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = README.read_text()
    start = text.index(heading)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


async def run_async_snippet(code: str) -> dict[str, object]:
    """Run top-level-await code as the body of a coroutine; return its locals."""
    body = textwrap.indent(code + "\nreturn locals()\n", "    ")
    namespace: dict[str, object] = {}
    exec(f"async def __snippet():\n{body}", namespace)
    return await namespace["__snippet"]()  # type: ignore[operator, no-any-return]


@pytest.mark.parametrize(
    "heading",
    ["## Quick start", "## Testing your own alert logic", "## Metrics", "## Cost budgets"],
)
async def test_snippet_runs(heading: str, capsys: pytest.CaptureFixture[str]) -> None:
    names = await run_async_snippet(python_block_after(heading))
    manager = names["manager"]
    await manager.aclose()  # type: ignore[attr-defined]
    if heading == "## Metrics":
        names["meter_provider"].shutdown()  # type: ignore[attr-defined]
        assert {"llm.quota.usage", "llm.quota.limit"} <= names["names"]  # type: ignore[operator]
    if heading == "## Cost budgets":  # 1,000 * 0.30 + 200 * 1.20 micro-USD
        assert names["status"]["cost_microusd"] == 540  # type: ignore[index]
        assert capsys.readouterr().out.strip() == "0.00054 540 0"
    if heading == "## Quick start":
        assert names["status"]["total_tokens"] == 1500  # type: ignore[index]
        assert len(names["all_statuses"]) == 1  # type: ignore[arg-type]
