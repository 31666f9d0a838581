"""An HTTP/3 GET with aioquic, a QUIC/HTTP/3 stack written by others, for
the h3_front tests. Prints the status on the first line, then the body.

Usage: aioquic_get.py HOST PORT SNI AUTHORITY PATH CA_FILE
"""
import asyncio
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
        self.done = self._loop.create_future()
        self.status = None
        self.body = b""

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and self.status is None:
                self.status = dict(ev.headers).get(b":status", b"?").decode()
            elif isinstance(ev, DataReceived):
                self.body += ev.data
            if getattr(ev, "stream_ended", False) and not self.done.done():
                self.done.set_result(None)

    async def get(self, authority, path):
        stream = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            stream,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
            ],
            end_stream=True,
        )
        self.transmit()
        await asyncio.wait_for(self.done, 10)


async def main(host, port, sni, authority, path, ca):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=sni)
    config.load_verify_locations(ca)
    async with connect(host, int(port), configuration=config, create_protocol=Client) as client:
        await client.get(authority, path)
        print(client.status)
        sys.stdout.write(client.body.decode())


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
