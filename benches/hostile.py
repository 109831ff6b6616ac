#!/usr/bin/env python3
"""The attacks of benches/hostile.sh, each a logged-in (or logging-in) client doing what a
hostile one would, for a number of seconds, against pgroute at 127.0.0.1:PORT.

    benches/hostile.py ATTACK PORT SECONDS

Attacks:
  freeze         item 1 of issue 22: a statement Parsed under the server name 228a125 gave
                 it (Rust's DefaultHasher, SipHash-1-3 with zero keys, of the Parse body),
                 then Bound with the wrong number of parameters
  unknown-users  SCRAM logins for user names that do not exist, 8 at once, back to back
  slow-logins    500 sockets that send a startup packet and never answer the challenge
  no-reader      one client pipelining large results and never reading them
  quadratic      inputs whose handling grew with the square of their size: SELECT and
                 300,000 `f(`, 20,000 SETs in one Query (PostgreSQL's own handling of that
                 many custom settings grows with their square: 100,000 take the server
                 minutes, a direct connection as much), 100,000 statements in one Query,
                 a select list of 50,000 calls
  churn          10,000 connections that log in and close, 32 at a time
Logins use the trust user `postgres` except where the attack is the login itself.
"""
import os
import socket
import struct
import sys
import threading
import time


def startup(user, database="app"):
    body = struct.pack("!i", 196608)
    for k, v in (("user", user), ("database", database)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def frame(tag, body):
    return tag + struct.pack("!i", len(body) + 4) + body


def query(sql):
    return frame(b"Q", sql.encode() + b"\0")


def read_msg(s, buf):
    while len(buf) < 5 or len(buf) < 1 + struct.unpack("!i", buf[1:5])[0]:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk
    n = struct.unpack("!i", buf[1:5])[0]
    msg = (buf[0:1], bytes(buf[5 : 1 + n]))
    del buf[: 1 + n]
    return msg


def until_ready(s, buf):
    while True:
        tag, body = read_msg(s, buf)
        if tag == b"Z":
            return


def login(port, user="postgres"):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(startup(user))
    buf = bytearray()
    until_ready(s, buf)
    return s, buf


def rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & 0xFFFFFFFFFFFFFFFF


def siphash13(data, k0=0, k1=0):
    """Rust's DefaultHasher (SipHash-1-3, zero keys) over `data` as written."""
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573
    mask = 0xFFFFFFFFFFFFFFFF

    def rnd(v0, v1, v2, v3):
        v0 = (v0 + v1) & mask; v1 = rotl(v1, 13) ^ v0; v0 = rotl(v0, 32)
        v2 = (v2 + v3) & mask; v3 = rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & mask; v3 = rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & mask; v1 = rotl(v1, 17) ^ v2; v2 = rotl(v2, 32)
        return v0, v1, v2, v3

    n = len(data)
    for i in range(0, n - n % 8, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
        v0 ^= m
    tail = data[n - n % 8 :]
    b = ((n & 0xFF) << 56) | int.from_bytes(tail + b"\0" * (8 - len(tail)), "little")
    v3 ^= b
    v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def freeze(port, deadline):
    sql = b"SELECT 1"
    tail = sql + b"\0" + struct.pack("!h", 0)
    # A [u8]'s Hash writes its length (usize, native endian) and then its bytes.
    name = "pgr_%016x" % siphash13(struct.pack("<Q", len(tail)) + tail)
    s, buf = login(port)
    parse = lambda n: frame(b"P", n.encode() + b"\0" + tail)
    bind = frame(b"B", b"\0" + name.encode() + b"\0" + struct.pack("!hhih", 0, 1, 1, 0) + b"1")
    s.sendall(parse("probe") + parse(name) + bind + frame(b"E", b"\0" + struct.pack("!i", 0)) + frame(b"S", b""))
    s.settimeout(max(1.0, deadline - time.time()))
    try:
        until_ready(s, buf)
    except (socket.timeout, EOFError):
        pass
    time.sleep(max(0.0, deadline - time.time()))


def unknown_users(port, deadline):
    def worker(k):
        i = 0
        while time.time() < deadline:
            i += 1
            try:
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(startup("nobody_%d_%d" % (k, i)))
                buf = bytearray()
                read_msg(s, buf)  # SASL mechanisms
                first = b"n,,n=,r=abcdefghijklmnopqrstuvwx"
                s.sendall(frame(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
                _, body = read_msg(s, buf)
                nonce = [p for p in body[4:].split(b",") if p.startswith(b"r=")][0]
                s.sendall(frame(b"p", b"c=biws," + nonce + b",p=" + b"A" * 44))
                read_msg(s, buf)
                s.close()
            except (OSError, EOFError):
                time.sleep(0.01)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def slow_logins(port, deadline):
    socks = []
    for _ in range(500):
        try:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(startup("app"))
            socks.append(s)
        except OSError:
            pass
    time.sleep(max(0.0, deadline - time.time()))
    for s in socks:
        s.close()


def no_reader(port, deadline):
    s, _ = login(port)
    s.setblocking(False)
    q = query("SELECT repeat('x', 100000) FROM generate_series(1, 10)")
    sent = 0
    while time.time() < deadline:
        try:
            sent += s.send(q)
        except BlockingIOError:
            time.sleep(0.05)
    s.close()


def quadratic(port, deadline):
    inputs = [
        "SELECT " + "f(" * 300000,
        "".join("SET a.x%d = 1;" % i for i in range(20000)),
        "SELECT 1;" * 100000,
        "SELECT " + ", ".join("f%d()" % i for i in range(50000)),
    ]
    s, buf = login(port)
    i = 0
    while time.time() < deadline:
        s.sendall(query(inputs[i % len(inputs)]))
        until_ready(s, buf)
        i += 1
    s.close()


def churn(port, deadline):
    left = [10000]
    lock = threading.Lock()

    def worker():
        while time.time() < deadline:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            try:
                s, _ = login(port)
                s.sendall(frame(b"X", b""))
                s.close()
            except (OSError, EOFError):
                time.sleep(0.01)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(max(0.0, deadline - time.time()))


ATTACKS = {
    "freeze": freeze,
    "unknown-users": unknown_users,
    "slow-logins": slow_logins,
    "no-reader": no_reader,
    "quadratic": quadratic,
    "churn": churn,
}

if __name__ == "__main__":
    attack, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    ATTACKS[attack](port, time.time() + secs)
    os._exit(0)
