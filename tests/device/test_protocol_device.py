# The wire's table (firmware/protocol.py) as both ends read it: run under MicroPython with an
# ESP32 heap and under CPython (tests/test_device_runtimes.py). Plain asserts only.
from microfang.firmware import protocol


def test_names_of_lower_case_letters_digits_dash_and_underscore_pass(bundle):
    for name in ("a", "a1", "kitchen", "sim0001", "reporter_2", "x-y", "0lead", "a" * 32):
        assert protocol.name_ok(name), name


def test_names_against_the_rule_are_refused(bundle):
    for name in ("", "a" * 33, "Bad", "-lead", "_lead", "sp ace", "a/b", "+", "#", "dot.ted", "ünï", None, 7):
        assert not protocol.name_ok(name), name


def test_a_board_topic_is_parsed_into_fleet_device_channel_and_agent(bundle):
    assert protocol.parse_topic("mf/home/kitchen/up/sentinel") == ("home", "kitchen", "up", "sentinel")
    assert protocol.parse_topic("mf/home/kitchen/log/sentinel") == ("home", "kitchen", "log", "sentinel")
    assert protocol.parse_topic("mf/home/kitchen/tele") == ("home", "kitchen", "tele", None)
    assert protocol.parse_topic("mf/home/kitchen/status") == ("home", "kitchen", "status", None)


def test_topics_outside_the_scheme_parse_to_none(bundle):
    for topic in ("mf/home/kitchen/up", "mf/home/kitchen/tele/a1", "mf/home/kitchen/ctl", "mf/home/kitchen/down/a1",
                  "xx/home/kitchen/tele", "mf/home/kitchen/up/Bad!Agent", "mf/Home/kitchen/tele",
                  "mf/home/kitchen/up/a1/extra", "mf/home//tele", "", "mf"):
        assert protocol.parse_topic(topic) is None, topic


def test_topics_built_for_a_board_parse_back(bundle):
    for channel, agent in ((protocol.UP, "a1"), (protocol.LOG, "a1"), (protocol.TELE, None), (protocol.STATUS, None)):
        built = protocol.topic("f", "d1", channel, agent)
        assert protocol.parse_topic(built) == ("f", "d1", channel, agent), built
    assert protocol.topic("f", "d1", protocol.DOWN, "a1") == "mf/f/d1/down/a1"
    assert protocol.topic("f", "d1", protocol.CTL) == "mf/f/d1/ctl"


def test_the_board_subscribes_to_its_own_down_and_ctl_topics(bundle):
    assert protocol.subscriptions("f", "d1") == ["mf/f/d1/down/#", "mf/f/d1/ctl"]


def test_the_gateway_subscribes_to_every_board_channel(bundle):
    assert protocol.subscriptions() == ["mf/+/+/status", "mf/+/+/tele", "mf/+/+/up/+", "mf/+/+/log/+"]


def test_control_kinds_are_distinct_and_cover_lifecycle_and_transfers(bundle):
    assert len(set(protocol.CTL_KINDS)) == len(protocol.CTL_KINDS)
    for kind in protocol.LIFECYCLE + protocol.TRANSFER_COMMANDS:
        assert kind in protocol.CTL_KINDS, kind
