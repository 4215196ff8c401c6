# Sensors: what an agent's sensor_read(channel) reads, on every runtime.
#
# One channel table (CHANNELS) says what a channel number means, in the same integer unit
# everywhere: on an ESP32 the channel is an ADC pin read through machine.ADC (port.adc) and
# converted by the board's two-point calibration; on the unix port and in the simulator it is
# a deterministic wave of the board's uptime. So an agent written against channel 0 reads
# centi-degrees C on a greenhouse board, in `microfang sim` and in `microfang run`.
#
# A board's channels come from /config.cbor "sensors": {channel: spec} (written by `microfang
# flash` from the board profile, boards/__init__.py SENSORS, or by `sim` from the fleet file):
#   {"pin": 36, "atten": "11db", "uv": [500000, 1500000], "value": [0, 10000]}
#       an ADC pin: microvolts uv[0] read as value[0], uv[1] as value[1], linear between
#       (and beyond): a TMP36 (10 mV per degree, 500 mV at 0 C) on GPIO36 as above
#   {"mean": 2500, "amplitude": 1000, "period_ms": 4000, "phase_ms": 0}
#       simulated: a triangle wave from mean - amplitude (at uptime 0) up to mean + amplitude
#       (half a period later) and back, integers only, so both runtimes read the same value
#       at the same uptime; {"mean": 3150} (amplitude 0) is a constant
# Without "sensors" a board off hardware (unix port, CPython) gets SIMULATED; an ESP32 has
# none (its channels are wired by whoever flashed it). A channel not configured, or whose ADC
# this port lacks, reads abi.E_NOT_FOUND.

from . import abi, port
from .errors import MicrofangError

# channel -> (name, unit): the meaning of a reading, the same on every board.
CHANNELS = (("temperature", "centi-degrees C"), ("moisture", "centi-percent"), ("light", "centi-percent"),
            ("battery", "millivolts"))
ATTENUATIONS = ("0db", "2.5db", "6db", "11db")  # machine.ADC.ATTN_0DB ... ATTN_11DB
_WAVE = ("mean", "amplitude", "period_ms", "phase_ms")
_ADC = ("pin", "atten", "uv", "value")
_LIMIT = 1 << 30  # readings and calibration points stay well inside an i32

# The default simulated channels: temperature 15-35 C over 4 s (crossing the threshold
# example's 30 C), moisture 15-35 % a quarter period later, light 0-100 % over a minute,
# battery 3.3-4.1 V over ten minutes.
SIMULATED = {0: {"mean": 2500, "amplitude": 1000, "period_ms": 4000, "phase_ms": 0},
             1: {"mean": 2500, "amplitude": 1000, "period_ms": 4000, "phase_ms": 1000},
             2: {"mean": 5000, "amplitude": 5000, "period_ms": 60000, "phase_ms": 0},
             3: {"mean": 3700, "amplitude": 400, "period_ms": 600000, "phase_ms": 0}}


class SensorError(MicrofangError):
    """A sensor configuration that cannot be used; the message names the channel and field."""


def channel_number(name):
    """A channel given by number or by its name in CHANNELS."""
    if isinstance(name, int) and not isinstance(name, bool) and 0 <= name < len(CHANNELS):
        return name
    for n, entry in enumerate(CHANNELS):
        if entry[0] == name:
            return n
    raise SensorError("unknown channel %r (have: %s)" % (name, ", ".join(
        "%d %s" % (n, entry[0]) for n, entry in enumerate(CHANNELS))))


def _int(where, value, low, high):
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SensorError("%s: %r must be an integer from %d to %d" % (where, value, low, high))
    return value


def _pair(where, value):
    if not isinstance(value, list) or len(value) != 2:
        raise SensorError("%s: %r must be a list of two integers" % (where, value))
    return [_int(where, value[0], -_LIMIT, _LIMIT), _int(where, value[1], -_LIMIT, _LIMIT)]


def check(channel, spec, adc_pins=None):
    """`spec` for `channel` checked and completed (defaults filled in), or SensorError.
    `adc_pins`: the pins the board can read (the profile's), None to accept any."""
    where = "sensor %s" % channel
    if not isinstance(spec, dict):
        raise SensorError("%s: %r must be a table" % (where, spec))
    if "pin" in spec:
        extra = [k for k in spec if k not in _ADC]
        if extra:
            raise SensorError("%s: unknown key %r for an ADC channel (have: %s)" % (where, extra[0], ", ".join(_ADC)))
        pin = _int(where + ".pin", spec["pin"], 0, 63)
        if adc_pins is not None and pin not in adc_pins:
            raise SensorError("%s.pin: GPIO%d is not an ADC1 pin of this board (have: %s)" % (
                where, pin, ", ".join(str(p) for p in adc_pins)))
        atten = spec.get("atten", "11db")
        if atten not in ATTENUATIONS:
            raise SensorError("%s.atten: %r is not one of %s" % (where, atten, ", ".join(ATTENUATIONS)))
        for key in ("uv", "value"):
            if key not in spec:
                raise SensorError("%s: an ADC channel needs %s (two calibration points)" % (where, key))
        uv = _pair(where + ".uv", spec["uv"])
        if uv[0] == uv[1]:
            raise SensorError("%s.uv: the two calibration points must differ" % where)
        return {"pin": pin, "atten": atten, "uv": uv, "value": _pair(where + ".value", spec["value"])}
    extra = [k for k in spec if k not in _WAVE]
    if extra:
        raise SensorError("%s: unknown key %r (a simulated channel has %s; an ADC channel has %s)" % (
            where, extra[0], ", ".join(_WAVE), ", ".join(_ADC)))
    if "mean" not in spec:
        raise SensorError("%s: needs mean (simulated) or pin (ADC)" % where)
    return {"mean": _int(where + ".mean", spec["mean"], -_LIMIT, _LIMIT),
            "amplitude": _int(where + ".amplitude", spec.get("amplitude", 0), 0, _LIMIT),
            "period_ms": _int(where + ".period_ms", spec.get("period_ms", 4000), 1, 1 << 30),
            "phase_ms": _int(where + ".phase_ms", spec.get("phase_ms", 0), 0, 1 << 30)}


def check_all(specs, adc_pins=None):
    """A whole "sensors" table ({channel number or name: spec}) checked: {number: spec}."""
    if not isinstance(specs, dict):
        raise SensorError("sensors: %r must be a table of channels" % (specs,))
    out = {}
    for name, spec in specs.items():
        n = channel_number(name)
        if n in out:
            raise SensorError("sensor %s: given twice" % name)
        out[n] = check(name, spec, adc_pins)
    return out


def wave(spec, uptime_ms):
    """A simulated channel's reading at `uptime_ms`: integers only, the same on every runtime."""
    amplitude = spec["amplitude"]
    period = spec["period_ms"]
    u = (uptime_ms + spec["phase_ms"]) % period
    return spec["mean"] - amplitude + 2 * amplitude * (period - abs(2 * u - period)) // period


def calibrate(spec, uv):
    """An ADC channel's reading from `uv` microvolts, by its two calibration points."""
    (u0, u1), (v0, v1) = spec["uv"], spec["value"]
    return v0 + (uv - u0) * (v1 - v0) // (u1 - u0)


class Sensors:
    """The board's channels, called as the supervisor's sensors hook: (agent_id, channel) ->
    reading. `specs` as in /config.cbor (None: this port's default); problems with a channel
    (a bad spec, an ADC this port lacks) go to `report` once, at boot, and it reads E_NOT_FOUND."""

    def __init__(self, specs=None, clock=port.ticks_ms, report=None, adc_pins=None):
        self._clock = clock
        self._start = clock()
        self._channels = {}  # number -> (spec, adc or None)
        if specs is None:
            specs = {} if port.ESP32 else SIMULATED
        try:
            items = list(specs.items())
        except AttributeError:
            items = []
            self._problem(report, "sensors: %r must be a table of channels" % (specs,))
        for name, spec in items:
            try:
                n = channel_number(name)
                spec = check(name, spec, adc_pins)
                adc = port.adc(spec["pin"], ATTENUATIONS.index(spec["atten"])) if "pin" in spec else None
            except SensorError as e:
                self._problem(report, "%s" % e)
                continue
            except (OSError, ValueError) as e:  # no ADC here, or machine.ADC refused the pin
                self._problem(report, "sensor %s: %s" % (name, e.args[-1] if e.args else e))
                continue
            self._channels[n] = (spec, adc)

    def _problem(self, report, text):
        if report is not None:
            report("", "sensors", text)

    def channels(self):
        """{channel: spec} of the channels that read."""
        return {n: entry[0] for n, entry in self._channels.items()}

    def __call__(self, agent_id, channel):
        entry = self._channels.get(channel)
        if entry is None:
            return abi.E_NOT_FOUND
        spec, adc = entry
        if adc is None:
            return wave(spec, port.ticks_diff(self._clock(), self._start))
        try:
            value = calibrate(spec, adc.read_uv())
        except OSError:
            return abi.E_NOT_FOUND
        return max(-_LIMIT, min(_LIMIT, value))
