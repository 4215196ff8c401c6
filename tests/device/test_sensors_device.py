# Sensor specifications that must hold on a board: run under MicroPython with an ESP32 heap and
# under CPython (tests/test_device_runtimes.py). Plain asserts only. The readings are exact
# integers: both runtimes must give the very same values at the same uptime.
from microfang.firmware import abi
from microfang.firmware.sensors import SIMULATED, SensorError, Sensors, calibrate, check, check_all


class Clock:
    def __init__(self):
        self.now = 1000

    def __call__(self):
        return self.now


def raises(fn, *args):
    try:
        fn(*args)
    except SensorError as e:
        return str(e)
    raise AssertionError("expected SensorError")


def test_a_simulated_wave_reads_the_same_integers_on_every_runtime(bundle):
    clock = Clock()
    sensors = Sensors({0: {"mean": 2500, "amplitude": 1000, "period_ms": 4000}}, clock)
    seen = []
    for uptime in (0, 1000, 2000, 3000, 4000, 4001, 123457):
        clock.now = 1000 + uptime
        seen.append(sensors("a1", 0))
    assert seen == [1500, 2500, 3500, 2500, 1500, 1501, 2043], seen


def test_a_constant_channel_and_a_phase_shift(bundle):
    clock = Clock()
    sensors = Sensors({"temperature": {"mean": 3150}, 1: {"mean": 0, "amplitude": 100, "period_ms": 1000,
                                                          "phase_ms": 500}}, clock)
    assert sensors("a1", 0) == 3150
    assert sensors("a1", 1) == 100  # half a period ahead: the top of the wave at uptime 0


def test_a_channel_not_configured_reads_not_found(bundle):
    sensors = Sensors({0: {"mean": 1}})
    assert sensors("a1", 1) == abi.E_NOT_FOUND
    assert sensors("a1", -1) == abi.E_NOT_FOUND
    assert sensors("a1", 1 << 31) == abi.E_NOT_FOUND


def test_off_an_esp32_a_board_without_sensor_config_reads_the_simulated_channels(bundle):
    sensors = Sensors(None, Clock())
    assert sensors.channels() == SIMULATED
    assert sensors("a1", 0) == 1500  # 15.00 C at boot, rising to 35.00 C


def test_an_adc_channel_is_calibrated_by_its_two_points(bundle):
    tmp36 = check(0, {"pin": 36, "uv": [500000, 1500000], "value": [0, 10000]})
    assert tmp36["atten"] == "11db"
    assert calibrate(tmp36, 750000) == 2500  # 750 mV: 25.00 C
    assert calibrate(tmp36, 400000) == -1000  # below the first point: -10.00 C
    soil = check(1, {"pin": 39, "uv": [2800000, 1200000], "value": [0, 10000]})
    assert calibrate(soil, 2800000) == 0 and calibrate(soil, 1200000) == 10000 and calibrate(soil, 2000000) == 5000


def test_an_adc_channel_this_port_cannot_read_is_reported_once_and_reads_not_found(bundle):
    import sys

    if sys.platform == "esp32":
        return  # a real board reads it
    seen = []
    sensors = Sensors({0: {"pin": 36, "uv": [0, 1], "value": [0, 1]}, 1: {"mean": 7}},
                      report=lambda agent, kind, text: seen.append((kind, text)))
    assert seen == [("sensors", "sensor 0: no ADC on this port (machine.ADC): GPIO36 cannot be read")], seen
    assert sensors("a1", 0) == abi.E_NOT_FOUND and sensors("a1", 1) == 7


def test_a_bad_spec_is_reported_by_channel_and_field_and_the_others_still_read(bundle):
    seen = []
    sensors = Sensors({0: {"mean": "warm"}, 1: {"mean": 5}, 9: {"mean": 1}, 2: "x"},
                      report=lambda agent, kind, text: seen.append(text))
    assert sensors("a1", 1) == 5 and sensors("a1", 0) == abi.E_NOT_FOUND
    assert "sensor 0.mean: 'warm' must be an integer" in seen[0], seen
    assert len(seen) == 3 and any("unknown channel 9" in t for t in seen) and any("sensor 2:" in t for t in seen), seen


def test_every_bad_spec_names_its_problem(bundle):
    assert "unknown key 'mena'" in raises(check, 0, {"mena": 1})
    assert "needs mean (simulated) or pin (ADC)" in raises(check, 0, {})
    assert "period_ms: 0 must be an integer from 1" in raises(check, 0, {"mean": 1, "period_ms": 0})
    assert "amplitude: -1 must be" in raises(check, 0, {"mean": 1, "amplitude": -1})
    assert "needs value" in raises(check, 0, {"pin": 36, "uv": [0, 1]})
    assert "the two calibration points must differ" in raises(check, 0, {"pin": 36, "uv": [5, 5], "value": [0, 1]})
    assert "atten: '12db' is not one of" in raises(check, 0, {"pin": 36, "atten": "12db", "uv": [0, 1],
                                                              "value": [0, 1]})
    assert "GPIO25 is not an ADC1 pin of this board" in raises(check, 0, {"pin": 25, "uv": [0, 1], "value": [0, 1]},
                                                               (32, 33, 34, 35, 36, 39))
    assert "must be a list of two integers" in raises(check, 0, {"pin": 36, "uv": 5, "value": [0, 1]})
    assert "given twice" in raises(check_all, {0: {"mean": 1}, "temperature": {"mean": 2}})
    assert "unknown channel 'humidity'" in raises(check_all, {"humidity": {"mean": 1}})
