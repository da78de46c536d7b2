"""The README's zero-code lines, run as written in a fresh venv, count usage and alert.

One venv per test session (under pytest's tmp dir): ``python -m venv``, then the README's
``pip install`` line with one rewrite, ``otel-llm-quota`` replaced by the path of this checkout,
and no constraints file, so the extras' own bounds must pick a working set from PyPI (it needs
the network to PyPI, and takes a minute or two). The README's ``app.py`` and run command then run
against the loopback stub of the OpenAI API (``OPENAI_BASE_URL``): the logging handler's alert
line proves the usage was counted.

The same venv checks ``otel-llm-quota doctor``: it passes there, and fails, naming the pin, in a
venv that sees the incompatible ``opentelemetry-util-genai`` 1.2b0 over the good one, where
``opentelemetry-instrument`` skips openai-v2 silently and the entry point's WARNING says so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import _missing
from .llm_stub import LLMStub

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BROKEN_GENAI = "opentelemetry-util-genai==1.2b0"
NO_INSTRUMENTATION = "no LLM instrumentation is active"


def readme_block(marker: str, language: str) -> str:
    """The first ```language block after ``<!-- marker -->`` in the README."""
    text = README.read_text()
    start = text.index(f"<!-- {marker} -->")
    match = re.search(rf"```{language}\n(.*?)```", text[start:], re.S)
    assert match is not None, f"no {language} block after {marker}"
    return match.group(1)


def split_run_block() -> tuple[list[str], str]:
    """The ``pip install`` lines (rewritten to this checkout) and the rest of the run block."""
    install: list[str] = []
    rest: list[str] = []
    for line in readme_block("zero-code:run", "bash").splitlines():
        if line.startswith("pip install"):
            install.append(line.replace("otel-llm-quota", str(ROOT)))
        else:
            rest.append(line)
    assert install, "the README's zero-code block has no pip install line"
    return install, "\n".join(rest) + "\n"


def clean_env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of a shell in which ``venv`` is activated, without this run's OTel,
    OpenAI and PYTHONPATH settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "OPENAI_", "ANTHROPIC_", "PYTHON", "VIRTUAL_ENV", "PIP_C"))
    }
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(venv)
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> str:
    done = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def readme_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv into which the README's install line was run (once per session)."""
    base = tmp_path_factory.mktemp("readme-venv")
    venv = base / "venv"
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False
    )
    if made.returncode != 0:
        _missing("python -m venv (with ensurepip)", "apt-get install python3-venv")
    install, _ = split_run_block()
    env = clean_env(venv)
    for line in install:
        run(["bash", "-c", f"set -e\n{line}"], env, base, timeout=900)
    return venv


@pytest.fixture(scope="module")
def stub() -> Iterator[LLMStub]:
    with LLMStub() as server:
        yield server


def run_readme_app(venv: Path, stub: LLMStub, cwd: Path) -> str:
    """Write the README's app.py to ``cwd`` and run the README's command there."""
    (cwd / "app.py").write_text(readme_block("zero-code:app", "python"))
    _, command = split_run_block()
    env = clean_env(
        venv, OPENAI_BASE_URL=f"http://127.0.0.1:{stub.port}/v1", OPENAI_API_KEY="sk-test"
    )
    return run(["bash", "-c", f"set -e\n{command}"], env, cwd)


def test_readme_zero_code_counts_and_alerts(
    readme_venv: Path, stub: LLMStub, tmp_path: Path
) -> None:
    output = run_readme_app(readme_venv, stub, tmp_path)
    assert "Hello from stub" in output  # the app ran, against the stub
    # 18 tokens of the README's 20-token quota: counted, and the logging handler's alert.
    assert "LLM quota openai crossed 80% (90.0% used)" in output, output
    assert NO_INSTRUMENTATION not in output, output


def doctor(python: Path, env: dict[str, str], cwd: Path) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [str(python), "-m", "otel_llm_quota", "doctor", "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def _openai_v2(report: dict[str, object]) -> dict[str, str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    found = [c for c in checks if "opentelemetry-instrumentation-openai-v2" in c["name"]]
    assert len(found) == 1, checks
    return found[0]  # type: ignore[no-any-return]


README_ENV = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_LLM_QUOTA_LIMITS": "openai=20",
    "OTEL_LLM_QUOTA_ALERT_HANDLERS": "logging",
}


def test_doctor_passes_on_the_readme_venv(readme_venv: Path, tmp_path: Path) -> None:
    code, report = doctor(
        readme_venv / "bin" / "python", clean_env(readme_venv, **README_ENV), tmp_path
    )
    assert code == 0, json.dumps(report, indent=1)
    assert report["failures"] == 0
    assert _openai_v2(report)["status"] == "ok"


@pytest.fixture(scope="module")
def broken_venv(readme_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv that sees the README venv's packages (a .pth file) under its own site-packages,
    which holds only the incompatible opentelemetry-util-genai: found first, as an upgrade
    would leave it."""
    venv = tmp_path_factory.mktemp("broken-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    good = Path(
        sysconfig.get_path("purelib", vars={"base": str(readme_venv), "platbase": str(readme_venv)})
    )
    own = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    assert good.is_dir(), good
    assert own.is_dir(), own
    (own / "readme_venv.pth").write_text(f"{good}\n")
    run(
        [
            str(readme_venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(own),
            BROKEN_GENAI,
        ],
        clean_env(readme_venv),
        venv,
        timeout=300,
    )
    return venv


def test_doctor_names_the_util_genai_pin_in_a_broken_venv(
    broken_venv: Path, tmp_path: Path
) -> None:
    code, report = doctor(
        broken_venv / "bin" / "python", clean_env(broken_venv, **README_ENV), tmp_path
    )
    assert code == 1, json.dumps(report, indent=1)
    check = _openai_v2(report)
    assert check["status"] == "failure"
    assert "opentelemetry-util-genai 1.2b0" in check["detail"]
    assert check["fix"].startswith("pip install 'opentelemetry-util-genai>=0.4b0,<0.5b0'")


def test_broken_venv_warns_that_no_instrumentation_is_active(
    broken_venv: Path, stub: LLMStub, tmp_path: Path
) -> None:
    """Under opentelemetry-instrument, openai-v2 is skipped without a word: the entry point's
    WARNING is what tells the user, and nothing is counted (no alert)."""
    python = broken_venv / "bin" / "python"
    (tmp_path / "app.py").write_text(readme_block("zero-code:app", "python"))
    launcher = "from opentelemetry.instrumentation.auto_instrumentation import run; run()"
    env = clean_env(
        broken_venv,
        **README_ENV,
        OPENAI_BASE_URL=f"http://127.0.0.1:{stub.port}/v1",
        OPENAI_API_KEY="sk-test",
    )
    output = run([str(python), "-c", launcher, str(python), "app.py"], env, tmp_path)
    assert "Hello from stub" in output
    assert NO_INSTRUMENTATION in output, output
    assert "crossed" not in output, output


ANTHROPIC_APP = """\
import anthropic

client = anthropic.Anthropic()  # ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL from the environment
message = client.messages.create(
    model="claude-3-5-haiku-latest",
    max_tokens=64,
    messages=[{"role": "user", "content": "Say hello"}],
)
print(message.content[0].text)
"""


def test_anthropic_extra_counts_the_sdk_spans(
    stub: LLMStub, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``[anthropic]`` in a fresh venv: the anthropic SDK's own spans are counted (no
    instrumentation package), with the README's run command for the anthropic quota."""
    base = tmp_path_factory.mktemp("anthropic-venv")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    run(["pip", "install", f"{ROOT}[anthropic]"], clean_env(venv), base, timeout=900)
    (base / "app.py").write_text(ANTHROPIC_APP)
    _, command = split_run_block()
    assert 'OTEL_LLM_QUOTA_LIMITS="openai=20"' in command
    command = command.replace('"openai=20"', '"anthropic=20"')  # 13 + 5 tokens: 90 %
    env = clean_env(
        venv, ANTHROPIC_BASE_URL=f"http://127.0.0.1:{stub.port}", ANTHROPIC_API_KEY="sk-ant-test"
    )
    output = run(["bash", "-c", f"set -e\n{command}"], env, base)
    assert "Hello from stub" in output
    assert "LLM quota anthropic crossed 80% (90.0% used)" in output, output
    assert NO_INSTRUMENTATION not in output, output
