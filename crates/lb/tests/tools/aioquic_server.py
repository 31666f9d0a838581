"""An HTTP/3 server with aioquic, a QUIC/HTTP/3 stack written by others,
as a backend for the h3_backend tests. Answers every request with status
200, an `x-backend: aioquic` header and the body `aioquic <path>`. Prints
the UDP port it bound on the first line, then serves until killed.

Usage: aioquic_server.py CERT_FILE KEY_FILE
"""
import asyncio
import sys

from aioquic.asyncio import serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated


class Server(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = None

    def quic_event_received(self, event):
        if isinstance(event, ProtocolNegotiated):
            self.h3 = H3Connection(self._quic)
        if self.h3 is None:
            return
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                path = dict(ev.headers).get(b":path", b"/")
                body = b"aioquic " + path
                self.h3.send_headers(
                    ev.stream_id,
                    [
                        (b":status", b"200"),
                        (b"x-backend", b"aioquic"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                )
                self.h3.send_data(ev.stream_id, body, end_stream=True)
                self.transmit()


async def main(cert, key):
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(cert, key)
    server = await serve("127.0.0.1", 0, configuration=config, create_protocol=Server)
    port = server._transport.get_extra_info("sockname")[1]
    print(port, flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
