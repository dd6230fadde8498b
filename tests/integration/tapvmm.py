#!/usr/bin/env python3
"""A minimal VMM for tests: opens a queue of a tap (as qemu does, with
TUNSETIFF on /dev/net/tun) in the current netns, sends an ARP request as
the "guest" and reports whether the target answered. Run inside the VM
pod's netns:

  tapvmm.py arp TAP GUEST_MAC GUEST_IP TARGET_IP [--multi-queue] [--seconds S] [--as UID:GID]
            [--queues N --send-queue K]

With --queues, N queues are opened (a multi-queue VMM) and the ARP goes out
on queue K; replies are read from every queue.

With --as, /dev/net/tun is opened as root and the process then becomes
UID:GID (no capabilities) before it attaches to the tap, as a VMM does
that gets the device from its launcher (libvirt, KubeVirt's device plugin):
the tap's owner check then decides.

Prints one JSON line: {"reply_mac": "..."} or {"reply_mac": null}, plus
"error" when the tap could not be opened or written.
"""
import fcntl
import json
import os
import select
import socket
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100


def open_queue(tap, multi_queue, as_user=None):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    if as_user:
        os.setgroups([])
        os.setgid(as_user[1])
        os.setuid(as_user[0])  # from root to another uid: every capability goes
    flags = IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", tap.encode(), flags))
    return fd


def mac_bytes(m):
    return bytes.fromhex(m.replace(":", ""))


def arp_request(src_mac, src_ip, dst_ip):
    eth = b"\xff" * 6 + mac_bytes(src_mac) + b"\x08\x06"
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac_bytes(src_mac) + socket.inet_aton(src_ip) \
        + b"\x00" * 6 + socket.inet_aton(dst_ip)
    return eth + arp


def arp(tap, guest_mac, guest_ip, target_ip, multi_queue=False, seconds=3.0, as_user=None,
        queues=1, send_queue=0):
    try:
        fds = [open_queue(tap, multi_queue or queues > 1, as_user if i == 0 else None)
               for i in range(queues)]
    except OSError as e:
        return {"reply_mac": None, "error": f"opening the tap: {e}"}
    fd = fds[send_queue]
    deadline = time.monotonic() + seconds
    frame = arp_request(guest_mac, guest_ip, target_ip)
    sent_at = 0.0
    error = None
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now - sent_at > 0.5:  # resend: the tap may still be coming up
                try:
                    os.write(fd, frame)
                    error = None
                except OSError as e:
                    error = str(e)
                sent_at = now
            r, _, _ = select.select(fds, [], [], 0.1)
            if not r:
                continue
            try:
                f = os.read(r[0], 65536)
            except BlockingIOError:
                continue
            if len(f) >= 42 and f[12:14] == b"\x08\x06" and struct.unpack("!H", f[20:22])[0] == 2 \
                    and f[28:32] == socket.inet_aton(target_ip) and f[0:6] == mac_bytes(guest_mac):
                return {"reply_mac": f[22:28].hex(":")}
        return {"reply_mac": None, "error": error}
    finally:
        for f in fds:
            os.close(f)


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) < 5 or a[0] != "arp":
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    secs = float(a[a.index("--seconds") + 1]) if "--seconds" in a else 3.0
    who = tuple(int(x) for x in a[a.index("--as") + 1].split(":")) if "--as" in a else None
    nq = int(a[a.index("--queues") + 1]) if "--queues" in a else 1
    sq = int(a[a.index("--send-queue") + 1]) if "--send-queue" in a else 0
    print(json.dumps(arp(a[1], a[2], a[3], a[4], "--multi-queue" in a, secs, who, nq, sq)))
