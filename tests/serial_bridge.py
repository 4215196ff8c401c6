"""A USB cable for a unix-port board: the test double for /dev/ttyUSB0.

Runs a command (microfang's MicroPython booting a board image) on a pseudo-terminal it controls,
so Ctrl-C interrupts it as a board's UART does, and serves that terminal on 127.0.0.1:PORT for
mpremote's `socket://` transport, one client after another. socat's TCP-LISTEN with a pty EXEC
does the same for one client only: it ends the board when the first client hangs up, and a
deploy is several mpremote sessions (docs: README "Deploy over USB").
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import subprocess
import termios
import threading


class SerialBridge:
    def __init__(self, command: list[str], port: int) -> None:
        self.port = port
        master, slave = os.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~(termios.ECHO | termios.ICANON)  # a UART echoes nothing and has no lines
        attrs[3] |= termios.ISIG | termios.NOFLSH  # Ctrl-C is SIGINT; keep what follows it
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(slave, termios.TCSANOW, attrs)

        def controlling_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                     preexec_fn=controlling_terminal)
        os.close(slave)
        self.master = master
        self.output = bytearray()  # what the board printed while no client was connected
        self.listener = socket.create_server(("127.0.0.1", port))
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        client = None
        while not self._stop:
            if client is None:
                try:
                    client, _ = self.listener.accept()
                except OSError:
                    client = None
            fds = [self.master] + ([client] if client else [])
            ready, _, _ = select.select(fds, [], [], 0.1)
            try:
                if self.master in ready:
                    data = os.read(self.master, 4096)
                    if client:
                        client.sendall(data)
                    else:
                        self.output += data
                if client in ready:
                    data = client.recv(4096)
                    if data:
                        os.write(self.master, data)
                    else:
                        client.close()
                        client = None
            except OSError:  # the board ended, or the client went away
                if self.proc.poll() is not None:
                    break
                if client:
                    client.close()
                client = None

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        self.proc.kill()
        self.proc.wait()
        self.listener.close()
        os.close(self.master)
