"""Sensors: one channel meaning everywhere (firmware/sensors.py). A board flashed for an ESP32
carries its profile's ADC channels; boards in `sim` and on the unix port read deterministic
simulated channels configured per board, on both runtimes, MicroPython at the ESP32 heap."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
from boards_runtime import RUNTIMES, RunningBoard
from esp_images import firmware_bin
from fleet import wait_until
from littlefs import LittleFS

from microfang.boards import BOARD_DEFS, PROFILES
from microfang.cli import main
from microfang.firmware.bundle import decode
from microfang.firmware.errors import MicrofangError
from microfang.firmware.sensors import CHANNELS, Sensors, calibrate
from microfang.provision import BLOCK
from microfang.sim import read_fleet_file


def flashed_config(tmp_path: Path, board: str) -> dict:
    """/config.cbor of a `microfang flash --out` image, read back with littlefs-python."""
    fw = tmp_path / "firmware.bin"
    fw.write_bytes(firmware_bin(board))
    out = tmp_path / "merged.bin"
    assert main(["flash", "--board", board, "--device", "kitchen", "--broker", "mqtt://gw.lan", "--firmware", str(fw),
                 "--db", str(tmp_path / "gw.db"), "--out", str(out)]) == 0
    vfs = BOARD_DEFS[board].data_partition()
    fs = LittleFS(block_size=BLOCK, block_count=vfs.size // BLOCK, mount=False)
    fs.context.buffer = bytearray(out.read_bytes()[vfs.offset:vfs.offset + vfs.size])
    fs.mount()
    with fs.open("/config.cbor", "rb") as f:
        return cbor2.loads(f.read())


@pytest.mark.parametrize("board", ["esp32", "esp32s3"])
def test_a_flashed_board_carries_its_profiles_adc_channels_with_their_meaning(board, tmp_path):
    spec = BOARD_DEFS[board]
    sensors = flashed_config(tmp_path, board)["sensors"]
    assert sorted(sensors) == list(range(len(CHANNELS)))  # every channel of the table is wired
    assert all(s["pin"] in spec.ADC_PINS and s["atten"] == "11db" for s in sensors.values()), sensors
    # What the ADC's microvolts read as, in each channel's unit (CHANNELS).
    assert calibrate(sensors[0], 750_000) == 2500  # TMP36 at 750 mV: 25.00 C
    assert calibrate(sensors[1], 2_000_000) == 5000  # soil halfway between dry and wet: 50.00 %
    assert calibrate(sensors[3], 1_850_000) == 3700  # 1.85 V behind a 1:2 divider: a 3.7 V battery


def test_the_esp32_channels_on_a_port_without_an_adc_are_reported_not_a_crash(tmp_path):
    seen: list[str] = []
    sensors = Sensors(flashed_config(tmp_path, "esp32")["sensors"], report=lambda a, k, t: seen.append(t))
    assert [sensors("a1", n) for n in range(4)] == [-5] * 4
    assert seen == [f"sensor {n}: no ADC on this port (machine.ADC): GPIO{pin} cannot be read"
                    for n, pin in enumerate((36, 39, 34, 35))]


FLEET = """fleet = "greenhouse"
[sensors]
temperature = { mean = 2000 }
[boards.mp]
runtime = "micropython"
profile = "esp32"
agents = ["threshold"]
[boards.mp.sensors]
temperature = { mean = 3200 }
[boards.py]
agents = ["threshold"]
[boards.py.sensors]
0 = { mean = 2000, amplitude = 1500, period_ms = 2000 }
[boards.cold]
agents = ["threshold"]
"""


def test_in_sim_a_micropython_board_at_the_esp32_heap_reads_its_configured_sensor_and_threshold_alerts(tmp_path):
    (tmp_path / "fleet.toml").write_text(FLEET, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "microfang", "sim", "fleet.toml", "-t", "8", "--db", "s.db"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "s.db") as con:
        alerts = {r[0] for r in con.execute("SELECT device FROM audit WHERE agent = 'threshold' AND action = 'publish'"
                                            " AND detail LIKE '%alert%'")}
        heard = {r[0] for r in con.execute("SELECT DISTINCT device FROM telemetry")}
    assert heard == {"mp", "py", "cold"}
    # 32.00 C held, and a wave up to 35.00 C, cross 30 C; "cold" takes the fleet's 20.00 C.
    assert alerts == {"mp", "py"}


def test_a_sim_fleet_file_refuses_a_bad_sensor_in_one_line_naming_it(tmp_path):
    cases = [("[boards.a.sensors]\ntemperature = { mean = 'warm' }\n",
              "boards.a.sensors: sensor temperature.mean: 'warm' must be an integer"),
             ("[boards.a.sensors]\nhumidity = { mean = 1 }\n", "boards.a.sensors: unknown channel 'humidity'"),
             ("[boards.a.sensors]\n0 = { pin = 36, uv = [0, 1], value = [0, 1] }\n",
              "boards.a.sensors: sensor 0: a sim board has no ADC pins"),
             ("sensors = 3\n[boards.a]\n", "fleet.toml: sensors: must be a table")]
    for text, problem in cases:
        path = tmp_path / "fleet.toml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(MicrofangError) as e:
            read_fleet_file(path)
        assert problem in str(e.value), (text, e.value)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_reporter_answers_with_the_configured_temperature(runtime, mosquitto, tmp_path, micropython,
                                                              example_bundle):
    """The sensors in /config.cbor reach the agent on either runtime (MicroPython at the ESP32
    heap): 31.50 C configured, "temperature 31.50 C" answered (-0.05 C meant E_NOT_FOUND)."""
    from microfang.gateway import Gateway

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True) as gw:
            config = {"device": "b1", "fleet": "test", "key": gw.add_device("b1", fleet="test"), "host": "127.0.0.1",
                      "port": mosquitto.port, "telemetry_ms": 300, "sensors": {0: {"mean": 3150}}}
            gw.store.register_manifest("b1", decode(example_bundle("reporter"))[0])
            board = await RunningBoard(runtime, config, tmp_path, [example_bundle("reporter")], micropython,
                                       PROFILES["esp32"].NAME).start()
            try:
                assert await wait_until(lambda: gw.store.latest_telemetry("b1") is not None, 30), board.lines()
                answer = await gw.ask("b1", "reporter", {"text": "how warm?"}, timeout=20)
            finally:
                await board.stop()
            return answer

    answer = asyncio.run(scenario())
    assert cbor2.loads(answer["data"]) == "temperature 31.50 C; answer 1 to: how warm?"
