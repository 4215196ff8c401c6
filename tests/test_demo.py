"""`microfang demo` as a newcomer runs it: offline, no configuration, an agent's LLM answer."""

import subprocess
import sys


def test_demo_shows_an_agents_llm_answer_and_a_summary():
    out = subprocess.run([sys.executable, "-m", "microfang", "demo", "--seconds", "15"], capture_output=True,
                         text=True, timeout=180, check=False, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                                                   "HOME": "/tmp"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LLM answers to agents" in out.stdout
    summary = out.stdout.strip().splitlines()[-1] if "demo:" not in out.stdout else out.stdout[out.stdout.rindex("demo:"):]
    assert "0 traps" in summary and "first LLM answer after" in summary, summary
    assert " 0 LLM calls" not in summary, summary
