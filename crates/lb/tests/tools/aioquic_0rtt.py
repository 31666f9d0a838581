"""HTTP/3 early data (0-RTT) with aioquic, a QUIC/HTTP/3 stack written by
others, for the h3_early_data tests. A first connection to PORT collects a
session ticket; a second one to RESUME_PORT resumes with it and sends a GET
and a POST in 0-RTT, before its handshake completes. Prints one JSON object:
whether early data was accepted, and each request's status and body.

Usage: aioquic_0rtt.py HOST PORT RESUME_PORT SNI AUTHORITY CA_FILE
"""
import asyncio
import json
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.answers = {}

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if not hasattr(ev, "stream_id") or ev.stream_id not in self.answers:
                continue
            answer = self.answers[ev.stream_id]
            if isinstance(ev, HeadersReceived) and answer["status"] is None:
                answer["status"] = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, DataReceived):
                answer["body"] += ev.data.decode(errors="replace")
            if getattr(ev, "stream_ended", False) and not answer["done"].done():
                answer["done"].set_result(None)

    def send(self, method, authority, path, body=b""):
        stream = self._quic.get_next_available_stream_id()
        self.answers[stream] = {"status": None, "body": "", "done": self._loop.create_future()}
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        self.h3.send_headers(stream, headers, end_stream=not body)
        if body:
            self.h3.send_data(stream, body, end_stream=True)
        self.transmit()
        return stream

    async def answer(self, stream):
        answer = self.answers[stream]
        await asyncio.wait_for(answer["done"], 10)
        return {"status": answer["status"], "body": answer["body"]}


async def main(host, port, resume_port, sni, authority, ca):
    tickets = []

    def config():
        c = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=sni)
        c.load_verify_locations(ca)
        return c

    async with connect(
        host, int(port), configuration=config(), create_protocol=Client,
        session_ticket_handler=tickets.append,
    ) as first:
        await first.answer(first.send("GET", authority, "/py-first"))
        for _ in range(100):
            if tickets:
                break
            await asyncio.sleep(0.02)
    if not tickets:
        sys.exit("no session ticket received")
    resumed = config()
    resumed.session_ticket = tickets[-1]
    async with connect(
        host, int(resume_port), configuration=resumed, create_protocol=Client,
        wait_connected=False,
    ) as client:
        get = client.send("GET", authority, "/py-early")
        post = client.send("POST", authority, "/py-post", b"pay")
        out = {"get": await client.answer(get)}
        out["post"] = await client.answer(post)
        # The answers came after the gateway's EncryptedExtensions, which
        # say whether it took the early data.
        out["early_data_accepted"] = bool(client._quic.tls.early_data_accepted)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
