import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
from brokers import Mosquitto  # noqa: E402


@pytest.fixture
def mosquitto(tmp_path):
    """A real Mosquitto broker on 127.0.0.1, on a free port, for one test."""
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()
