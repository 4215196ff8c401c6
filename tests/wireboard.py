"""A board on the wire for gateway tests: a paho client with a device key that sends signed
echo requests and collects the ids of the replies it gets (duplicates included)."""

import socket
import threading

import paho.mqtt.client as mqtt

from microfang.firmware import cbor, envelope

KEY = b"k" * 32


class WireBoard:
    """A board on the wire: sends echo requests on up/a1, collects the reply ids from down/a1."""

    def __init__(self, port, device="dev1", key=KEY, fleet="f"):
        self.device, self.key, self.fleet = device, key, fleet
        self.replies = []
        self.ok = {}  # reply id -> whether it was a success
        self.errors = {}  # reply id -> the error of a failure
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.subscribe(f"mf/{fleet}/{device}/down/a1", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        doc = envelope.open_envelope(message.payload, lambda dev: self.key)
        with self.lock:
            self.replies.append(doc["body"]["id"])
            self.ok[doc["body"]["id"]] = doc["body"]["ok"]
            if not doc["body"]["ok"]:
                self.errors[doc["body"]["id"]] = doc["body"].get("error")

    def send(self, first, count):
        for i in range(first, first + count):
            body = {"id": i, "kind": "echo", "body": cbor.dumps(i)}
            self.client.publish(f"mf/{self.fleet}/{self.device}/up/a1",
                                envelope.seal(self.key, self.device, i, "a1", "request", body), qos=1)

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()
