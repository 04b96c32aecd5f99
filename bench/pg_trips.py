"""A TCP proxy between distbot and PostgreSQL that counts round trips (bench/orders.py --trips).

A round trip is a turn of a connection: the client speaks after the server has answered since
the client last spoke. A pipeline (asyncpg's executemany: many Bind/Execute, one Sync) is one
trip; a statement prepared and then executed is two. The proxy runs as its own process, so that
its copying does not share the bench's event loop; each line read on stdin is answered with one
JSON line on stdout: {"trips": ..., "connections": ...} so far.

    python bench/pg_trips.py --port 6543 --to 127.0.0.1:5432
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys


class Trips:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.trips = self.connections = 0

    async def serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.host, self.port)
        self.connections += 1
        answered = [True]  # the server spoke since the client last did: the client's next bytes start a trip

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, from_client: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await r.read(65536):
                    if from_client and answered[0]:
                        self.trips += 1
                    answered[0] = not from_client
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(pump(client_r, server_w, True), pump(server_r, client_w, False))


async def main_async(args: argparse.Namespace) -> None:
    host, _, port = args.to.rpartition(":")
    trips = Trips(host, int(port))
    server = await asyncio.start_server(trips.serve, "127.0.0.1", args.port)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print(json.dumps({"listening": args.port}), flush=True)
    async with server:
        while await stdin.readline():
            print(json.dumps({"trips": trips.trips, "connections": trips.connections}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--to", required=True, help="host:port of the PostgreSQL server")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
