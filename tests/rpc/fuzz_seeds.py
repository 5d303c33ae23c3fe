#!/usr/bin/env python3
"""fuzz_seeds.py - writes the seed corpus of fuzz_baidu_std.c.

Each seed is one selector byte (low bit: 0 the plain server, 1 the one with
an authenticator) followed by baidu_std request frames for
weft.test.TestService (tests/rpc/test_rpc.proto), encoded here by hand:

    python3 tests/rpc/fuzz_seeds.py tests/rpc/fuzz_baidu_std_corpus
"""
import os
import struct
import sys
import zlib


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, wire, value):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(value)
    return key + varint(len(value)) + value


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 & -(c & 1))
    c ^= 0xFFFFFFFF
    m = (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    return struct.pack(">I", m)


def frame(method, message, cid=1, service=b"weft.test.TestService", attachment=b"",
          compress=0, checksum=False, auth=None):
    if compress == 2:
        z = zlib.compressobj(6, zlib.DEFLATED, 31)
        message = z.compress(message) + z.flush()
    elif compress == 3:
        message = zlib.compress(message)
    request = field(1, 2, service) + field(2, 2, method) + field(3, 0, 99) + field(8, 0, 500)
    meta = field(1, 2, request) + field(4, 0, cid)
    if compress:
        meta += field(3, 0, compress)
    if attachment:
        meta += field(5, 0, len(attachment))
    if auth is not None:
        meta += field(7, 2, auth)
    meta += field(9, 2, field(1, 2, b"k") + field(2, 2, b"v"))
    if checksum:
        meta += field(11, 0, 1) + field(12, 2, crc32c(message))
    body = meta + message + attachment
    return b"PRPC" + struct.pack(">II", len(body), len(meta)) + body


def echo(text, data=b""):
    return field(1, 2, text) + (field(2, 2, data) if data else b"")


def node(depth):
    n = field(2, 0, depth)
    for i in range(depth):
        n = field(1, 2, n) + field(2, 0, depth - i - 1)
    return n


SEEDS = {
    "echo": b"\0" + frame(b"Echo", echo(b"hello")),
    "echo_attachment": b"\0" + frame(b"Echo", echo(b"a", b"\x00\x01"), attachment=b"ATTACH" * 10),
    "echo_gzip": b"\0" + frame(b"Echo", echo(b"zip " * 50), compress=2),
    "echo_zlib_checksum": b"\0" + frame(b"Echo", echo(b"z " * 30), compress=3, checksum=True),
    "echo_checksum": b"\0" + frame(b"Echo", echo(b"sum"), checksum=True, cid=-5),
    "nested": b"\0" + frame(b"Nested", node(5)),
    "sleep_then_echo": b"\0" + frame(b"Sleep", field(1, 0, 1) + field(2, 0, 3), cid=2)
                       + frame(b"Echo", echo(b"second"), cid=3),
    "fail": b"\0" + frame(b"Fail", field(1, 0, 5005) + field(2, 2, b"no")),
    "fail_required": b"\0" + frame(b"Fail", field(3, 0, 1)),
    "inspect": b"\0" + frame(b"Inspect", field(1, 2, b"k")),
    "flaky": b"\0" + frame(b"Flaky", field(1, 0, 1)),
    "short_name": b"\0" + frame(b"Echo", echo(b"s"), service=b"TestService"),
    "unknown": b"\0" + frame(b"Nope", echo(b"x"), service=b"weft.test.Nope"),
    "auth_ok": b"\1" + frame(b"Echo", echo(b"in"), auth=b"key") + frame(b"Echo", echo(b"again"), cid=9),
    "auth_bad": b"\1" + frame(b"Echo", echo(b"out"), auth=b"bad"),
}

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "fuzz_baidu_std_corpus"
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
