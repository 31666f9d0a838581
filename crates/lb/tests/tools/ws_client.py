"""A WebSocket client for the gateway's tests, on the `websockets` library
(Python): connects to wss://HOST:PORT/chat on 127.0.0.1 trusting CA, sends a
text message, a binary one of SIZE bytes and a ping, checks the echoes and
the pong, then closes with code 4000 and reason "done". Prints one JSON
line: {"text", "binary_ok", "pong", "close_code"}.

  ws_client.py PORT CA HOST SIZE
"""
import json
import socket
import ssl
import sys

from websockets.sync.client import connect


def main(port, ca, host, size):
    context = ssl.create_default_context(cafile=ca)
    payload = bytes(i % 251 for i in range(size))
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    url = f"wss://{host}:{port}/chat"
    with connect(url, sock=sock, ssl=context, max_size=None, open_timeout=10) as ws:
        ws.send("hello through tls")
        text = ws.recv(timeout=10)
        ws.send(payload)
        echoed = ws.recv(timeout=10)
        pong = ws.ping(b"are you there").wait(timeout=10)
        ws.close(code=4000, reason="done")
        print(json.dumps({
            "text": text,
            "binary_ok": echoed == payload,
            "pong": bool(pong),
            "close_code": ws.close_code,
        }), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))
