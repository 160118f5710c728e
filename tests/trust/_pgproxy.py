"""A TCP proxy in front of the test PostgreSQL server that loses a connection around COMMIT.

It follows the wire protocol's framing (startup message untyped, then 1-byte type + int32
length) on the client's side only, so it knows when a client sends ``COMMIT``. A connection
whose transaction wrote pipekit's commit token (``SET commit_token``, the merge's fence
statement) is the one it breaks, once, as told by ``mode``:

- ``after_commit``: COMMIT reaches the server (which commits); its answer never reaches the
  client, whose connection is then closed: the client cannot know whether it committed.
- ``before_commit``: COMMIT never reaches the server; both sides are closed (the server rolls
  the transaction back).

``refuse_after`` makes every connection opened after the break fail at once (a destination that
stays unreachable). Everything else is forwarded untouched. Local addresses only.
"""

from __future__ import annotations

import socket
import struct
import threading


def _close(s: socket.socket) -> None:
    """Shut down, then close: close() alone leaves the connection open while another thread
    is blocked in recv() on it (no FIN is sent), and the server would never learn."""
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


class PgProxy:
    def __init__(self, upstream_port: int, mode: str, *, refuse_after: bool = False) -> None:
        assert mode in ("after_commit", "before_commit", "off")
        self.upstream = ("127.0.0.1", upstream_port)
        self.mode = mode
        self.refuse_after = refuse_after
        self.broken = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.refuse_after and self.broken.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump_server, args=(server, client), daemon=True).start()
            threading.Thread(target=self._pump_client, args=(client, server), daemon=True).start()

    @staticmethod
    def _pump_server(server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client)
            _close(server)

    def _pump_client(self, client: socket.socket, server: socket.socket) -> None:
        buf = b""
        untyped = True  # the startup message (and an SSL/GSS request before it) has no type byte
        fenced = False
        keep_server = False
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    return
                buf += data
                while True:
                    if untyped:
                        if len(buf) < 4:
                            break
                        (n,) = struct.unpack("!I", buf[:4])
                        if len(buf) < n:
                            break
                        msg, buf = buf[:n], buf[n:]
                        if n != 8:  # 8 bytes: SSLRequest / GSSENCRequest; the startup follows, untyped too
                            untyped = False
                        server.sendall(msg)
                        continue
                    if len(buf) < 5:
                        break
                    (n,) = struct.unpack("!I", buf[1:5])
                    if len(buf) < 1 + n:
                        break
                    msg, buf = buf[: 1 + n], buf[1 + n:]
                    if b"SET commit_token" in msg:
                        fenced = True
                    is_commit = msg[:1] == b"Q" and msg[5:].lstrip().upper().startswith(b"COMMIT")
                    if is_commit and fenced and self.mode != "off" and self._claim_break():
                        if self.mode == "before_commit":
                            return  # finally closes both sides: the server rolls back
                        # Cut the client off first, so that the server's answer cannot reach it;
                        # then the server commits. It learns the client left a second later.
                        client.shutdown(socket.SHUT_RDWR)
                        server.sendall(msg)
                        keep_server = True
                        threading.Timer(1.0, _close, args=(server,)).start()
                        return
                    server.sendall(msg)
        except OSError:
            pass
        finally:
            _close(client)
            if not keep_server:
                _close(server)

    def _claim_break(self) -> bool:
        with self._lock:
            if self.broken.is_set():
                return False
            self.broken.set()
            return True
