# Agents' mf_log lines forwarded within their budget (firmware/agentlines.py): run under
# MicroPython with an ESP32 heap and under CPython (tests/test_device_runtimes.py). Plain asserts.
from microfang.firmware import protocol
from microfang.firmware.agentlines import AgentLines


class Clock:
    def __init__(self):
        self.ms = 1000

    def __call__(self):
        return self.ms


def forwarder(accept=True):
    sent = []

    def send(agent_id, body):
        sent.append((agent_id, body))
        return accept

    clock = Clock()
    return AgentLines(send, clock), sent, clock


def test_a_burst_of_lines_is_forwarded_and_the_rest_dropped_and_counted(bundle):
    lines, sent, _ = forwarder()
    results = [lines.forward("a1", "tick %d" % i) for i in range(protocol.LINES_BURST + 5)]
    assert results == [True] * protocol.LINES_BURST + [False] * 5
    assert [body["line"] for _, body in sent] == ["tick %d" % i for i in range(protocol.LINES_BURST)]
    assert lines.dropped == 5


def test_the_next_line_that_fits_says_how_many_were_dropped_before_it(bundle):
    lines, sent, clock = forwarder()
    for i in range(protocol.LINES_BURST + 3):
        lines.forward("a1", "x")
    clock.ms += 1000 // protocol.LINES_PER_S  # room for one more
    assert lines.forward("a1", "after")
    assert sent[-1][1] == {"line": "after", "ms": clock.ms, "dropped": 3}
    clock.ms += 1000
    lines.forward("a1", "later")
    assert sent[-1][1]["dropped"] == 0


def test_each_agent_has_a_budget_of_its_own(bundle):
    lines, sent, _ = forwarder()
    for i in range(protocol.LINES_BURST + 1):
        lines.forward("chatty", "x")
    assert lines.forward("quiet", "hello")
    assert sent[-1] == ("quiet", {"line": "hello", "ms": 1000, "dropped": 0})


def test_a_long_line_is_cut_at_the_limit_without_half_a_character(bundle):
    lines, sent, _ = forwarder()
    lines.forward("a1", "a" * (protocol.LINE_MAX - 1) + "\u00e9" + "tail")  # the cut falls inside the two-byte é
    text = sent[0][1]["line"]
    assert text == "a" * (protocol.LINE_MAX - 1)
    assert len(text.encode()) <= protocol.LINE_MAX


def test_a_full_outbox_counts_the_line_as_dropped(bundle):
    lines, sent, _ = forwarder(accept=False)
    assert not lines.forward("a1", "lost")
    assert lines.dropped == 1
