"""`microfang demo` as a newcomer runs it: offline, no configuration, an agent's LLM answer."""

import socket
import subprocess
import sys

from rich.console import Console

from microfang.gateway import Gateway


def test_demo_shows_an_agents_llm_answer_and_a_summary(tmp_path):
    # An empty PATH: no system compiler (clang, wasm-ld) is needed; C agents are built with zig.
    (tmp_path / "bin").mkdir()
    out = subprocess.run([sys.executable, "-m", "microfang", "demo", "--seconds", "15"], capture_output=True,
                         text=True, timeout=180, check=False, env={"HF_HUB_OFFLINE": "1", "PATH": str(tmp_path / "bin"),
                                                                   "HOME": "/tmp"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LLM answers to agents" in out.stdout
    summary = out.stdout.strip().splitlines()[-1] if "demo:" not in out.stdout else out.stdout[out.stdout.rindex("demo:"):]
    assert "0 traps" in summary and "first LLM answer after" in summary, summary
    assert " 0 LLM calls" not in summary, summary
    assert "loading the local model" in out.stderr  # an indicator while the model loads


def test_the_demo_table_fits_80_columns_without_cutting_names(tmp_path):
    from microfang.demo import AGENTS, _Board, _view
    from microfang.sim import BoardPlan, build_examples

    bundles = build_examples(AGENTS)
    gateway = Gateway(broker="mqtt://127.0.0.1:1", db=tmp_path / "g.db")
    config = {"fleet": "demo", "key": b"k" * 32, "sign_keys": [b"s" * 32], "host": "127.0.0.1", "port": 1}
    boards = [_Board(BoardPlan(f"demo{n}", bundles), dict(config, device=f"demo{n}"), [], 6.0) for n in range(3)]
    boards[0].per_agent["sentinel"] = "a long answer from the model " * 5
    screen = Console(width=80, record=True, file=open("/dev/null", "w"))
    screen.print(_view(boards, gateway, [(1.0, "demo0", "water the plants")], 0.0, None))
    lines = screen.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines), [len(line) for line in lines]
    rows = [line for line in lines if line.startswith("demo")]
    assert len(rows) == 9 and all(line.split()[1] in AGENTS for line in rows), lines


def test_the_embedded_broker_prints_nothing_of_its_own(capfd):
    import paho.mqtt.client as mqtt

    from microfang.broker import embedded

    with embedded() as port:
        silent = socket.create_connection(("127.0.0.1", port))  # a client that never speaks
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.publish("x", b"1", qos=1).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()
        silent.close()
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == "", captured
