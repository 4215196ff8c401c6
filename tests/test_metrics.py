"""The gateway's /metrics as Prometheus reads it: `promtool check metrics` (Debian's prometheus
package; tests/run installs it) finds nothing to complain about, every family has its HELP."""

import shutil
import subprocess

import pytest

from microfang.gateway.http import prometheus

METRICS = {"messages": 12, "requests": 5, "replies": 5, "telemetry": 3, "log_records": 0, "publishes": 1,
           "presence": 2, "denied": 0, "dropped_forged": 1, "dropped_replay": 0}
ROUTER = {"requests": 5, "replies_ok": 4, "replies_error": 1, "rate_limited": 0, "busy": 0, "timeouts": 0,
          "unknown_kind": 0, "over_budget": 0}
HEALTH = {"devices": 2, "online": 1, "broker_connected": True, "pending_requests": 0}


def test_promtool_finds_nothing_to_complain_about():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing (Debian: apt install prometheus; tests/run installs it)", pytrace=False)
    text = prometheus(METRICS, ROUTER, HEALTH)
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_family_has_help_and_a_type():
    lines = prometheus(METRICS, ROUTER, HEALTH).splitlines()
    families = {line.split()[2] for line in lines if line.startswith("# TYPE")}
    helped = {line.split()[2] for line in lines if line.startswith("# HELP")}
    assert families == helped and "microfang_build_info" in families
    assert 'microfang_dropped_total{reason="forged"} 1' in lines
