#!/usr/bin/env python3
"""Raw Ethernet frames for the integration tests, run inside a pod's netns.

  pkt.py send IFACE HEX [COUNT]      send the frame COUNT times
  pkt.py capture IFACE SECONDS [MARKER_HEX]
      print one JSON line per received frame (its 802.1Q tag comes from
      PACKET_AUXDATA: the kernel strips tags into metadata before packet
      sockets see them); prints "ready" first, so callers can start sending.
"""
import json
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
PACKET_OUTGOING = 4


def send(ifname, hexframe, count=1):
    frame = bytes.fromhex(hexframe)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    for _ in range(count):
        s.send(frame)
        time.sleep(0.001)
    s.close()


def capture(ifname, seconds, marker=None):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((ifname, 0))
    print("ready", flush=True)
    end = time.monotonic() + seconds
    marker = bytes.fromhex(marker) if marker else None
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([s], [], [], left)
        if not r:
            continue
        data, anc, _flags, addr = s.recvmsg(65535, socket.CMSG_SPACE(64))
        if addr[2] == PACKET_OUTGOING:
            continue
        vlan = None
        pcp = None
        for level, typ, cdata in anc:
            if level == SOL_PACKET and typ == PACKET_AUXDATA and len(cdata) >= 20:
                status, _l, _s, _m, _n, tci, _tpid = struct.unpack("IIIHHHH", cdata[:20])
                if status & TP_STATUS_VLAN_VALID:
                    vlan = tci & 0x0FFF
                    pcp = tci >> 13
        # A tag still in the bytes (e.g. a stacked tag) is reported too.
        inline = None
        if len(data) >= 18 and data[12:14] in (b"\x81\x00", b"\x88\xa8"):
            inline = struct.unpack("!H", data[14:16])[0] & 0x0FFF
        if marker and marker not in data:
            continue
        print(json.dumps({
            "dst": data[0:6].hex(":"),
            "src": data[6:12].hex(":"),
            "vlan": vlan,
            "pcp": pcp,
            "inline_vlan": inline,
            "len": len(data),
            "hex": data.hex(),
        }), flush=True)
    s.close()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "send":
        send(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    elif cmd == "capture":
        capture(sys.argv[2], float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        sys.exit(f"unknown command {cmd}")
