"""Opens N idle client connections to pgroute (trust login, raw protocol: StartupMessage,
then wait for ReadyForQuery) and holds them until stdin closes. Prints how long opening
them took. Used by benches/idle.sh.

    python3 benches/idle_clients.py PORT N USER DATABASE
"""
import asyncio
import struct
import sys
import time


async def one(port, user, database, held):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    body = struct.pack("!i", 196608) + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in (("user", user), ("database", database))
    ) + b"\0"
    w.write(struct.pack("!i", len(body) + 4) + body)
    await w.drain()
    while True:
        tag = await r.readexactly(1)
        (length,) = struct.unpack("!i", await r.readexactly(4))
        await r.readexactly(length - 4)
        if tag == b"Z":
            break
        if tag == b"E":
            raise RuntimeError("login refused")
    held.append(w)


async def main():
    port, n, user, database = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    held = []
    started = time.monotonic()
    batch = 200
    for i in range(0, n, batch):
        await asyncio.gather(*(one(port, user, database, held) for _ in range(min(batch, n - i))))
    print(f"opened {len(held)} in {time.monotonic() - started:.1f}s", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
