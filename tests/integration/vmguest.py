"""A tiny Linux VM guest for integration tests: QEMU (TCG) on an existing tap.

build_guest() makes (once, then cached under tests/integration/.cache/vmguest)
a kernel and an initramfs: Debian's bookworm kernel (linux-image-6.1.0-*-amd64,
fetched with `apt-get download`), its virtio-net modules, busybox-static and an
/init that loads the modules and runs a shell on the serial console (ttyS0).

Guest boots that with qemu-system-x86_64 inside a network namespace, on a tap
device someone else created there (plain or multi_queue), and talks to it:
run() executes a shell command over the serial console and returns (rc,
output); qmp() sends QMP commands (e.g. set_link); helpers configure eth0,
ping, read carrier/operstate and push bulk TCP data for rate measurements,
with TcpReceiver as the matching host-side (netns) receiver.

Every wait is bounded; a timeout raises GuestTimeout (an AssertionError and a
TimeoutError) carrying the tail of the console log. Install what this needs
with scripts/setup-qemu.sh.
"""
import base64
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import math
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".cache" / "vmguest"
QEMU = os.environ.get("VMGUEST_QEMU", "qemu-system-x86_64")
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

# The modules a virtio-net NIC needs in Debian's 6.1 kernel (those built in,
# per modules.builtin, are skipped; dependencies are added from .modinfo).
MODULES = ("virtio", "virtio_ring", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
           "failover", "net_failover", "virtio_net")
KERNEL_RE = re.compile(r"^linux-image-6\.1\.0-(\d+)-amd64(-unsigned)?$")
READY = "VMGUEST-READY"
CMDLINE = ("console=ttyS0 quiet loglevel=1 panic=-1 mitigations=off nokaslr no_timer_check "
           "i8042.noaux i8042.nokbd i8042.nopnp 8250.nr_uarts=1 random.trust_cpu=on")

INIT = r"""#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts /run /tmp
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
dmesg -n 1
for m in $(cat /lib/modules/load-order); do
  insmod /lib/modules/$m.ko || echo "vmguest: insmod $m failed" >/dev/console
done
hostname vmguest
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo "VMGUEST""-READY $(cat /proc/uptime)" >/dev/console
exec setsid sh -c 'exec env PS1="vmguest# " sh -i </dev/ttyS0 >/dev/ttyS0 2>&1'
"""
RECIPE_VERSION = 1


class GuestTimeout(TimeoutError, AssertionError):
    """A bounded wait on the guest ran out; the message has the console tail."""


class QMPError(RuntimeError):
    pass


def _run(args, timeout=120, **kw):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "LC_ALL": "C"}, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r.stdout


def why_cannot_run():
    """None if guests can be built and booted here, else the reason."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, taps)"
    if shutil.which(QEMU) is None:
        return f"{QEMU} not installed: run scripts/setup-qemu.sh"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if not _cached_build(DEFAULT_CACHE):
        if _busybox() is None:
            return "busybox-static not installed: run scripts/setup-qemu.sh"
        for tool in ("apt-get", "apt-cache", "dpkg-deb"):
            if shutil.which(tool) is None:
                return f"`{tool}` is missing (needed to fetch the guest kernel)"
    return None


# ---------------------------------------------------------------- building

def _recipe_key():
    h = hashlib.sha256(json.dumps([RECIPE_VERSION, INIT, MODULES, KERNEL_RE.pattern]).encode())
    return h.hexdigest()[:12]


def _cached_build(cache_dir):
    d = Path(cache_dir) / _recipe_key()
    k, i = d / "vmlinuz", d / "initrd.img"
    return (k, i) if k.is_file() and i.is_file() else None


def _is_static_elf(path):
    """True for an ELF64 executable without a PT_INTERP (dynamic loader) header."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        if phoff + (i + 1) * phentsize > len(data):
            return False
        if struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3:  # PT_INTERP
            return False
    return True


def _busybox():
    """A statically linked busybox (busybox-static's), or None."""
    for p in BUSYBOX_CANDIDATES:
        if os.access(p, os.X_OK) and _is_static_elf(p):
            return p
    return None


def _pick_kernel_package():
    """The newest linux-image-6.1.0-NN-amd64[-unsigned] apt can download."""
    def candidates():
        names = _run(["apt-cache", "pkgnames", "linux-image-6.1.0-"]).split()
        found = [(int(m.group(1)), bool(m.group(2)), n) for n in names if (m := KERNEL_RE.match(n))]
        # Newest ABI first; the unsigned image (same kernel, no EFI signature) first.
        return [n for _, _, n in sorted(found, reverse=True)]

    for attempt in range(2):
        for name in candidates():
            r = subprocess.run(["apt-cache", "show", "--no-all-versions", name], capture_output=True,
                               text=True, timeout=60, env={**os.environ, "LC_ALL": "C"})
            if r.returncode == 0 and re.search(r"^Package: ", r.stdout, re.M):
                return name
        if attempt == 0 and os.geteuid() == 0:
            # Empty or stale package lists: refresh them once.
            subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=120", "update", "-qq"],
                           capture_output=True, timeout=300)
    raise RuntimeError("apt knows no downloadable linux-image-6.1.0-*-amd64 package "
                       "(is this Debian 12 with bookworm in the apt sources?)")


def _elf_section(data, wanted):
    """The bytes of section `wanted` of a little-endian ELF64 object."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 object")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def sh(i):
        name, _type, _flags, _addr, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, off, size
    _, stroff, _ = sh(shstrndx)
    for i in range(shnum):
        name, off, size = sh(i)
        end = data.index(b"\0", stroff + name)
        if data[stroff + name:end] == wanted:
            return data[off:off + size]
    return b""


def module_depends(ko: bytes):
    """The `depends=` list of a kernel module's .modinfo."""
    for field in _elf_section(ko, b".modinfo").split(b"\0"):
        if field.startswith(b"depends="):
            return [d for d in field[8:].decode().split(",") if d]
    return []


def _modname(path):
    base = path.rsplit("/", 1)[-1]
    return re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base).replace("-", "_")


def _decompress_ko(path, data):
    if path.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True, check=True,
                              timeout=60).stdout
    return data


def _scan_deb(deb, want_modules, need_base):
    """One streaming pass over the .deb's data: returns the kernel, modules.builtin
    (when need_base) and the .ko files (decompressed) whose names are wanted."""
    found = {"kernel": None, "version": None, "builtin": None, "modules": {}}
    p = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=p.stdout, mode="r|") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                name = m.name.lstrip("./")
                if need_base and re.fullmatch(r"boot/vmlinuz-.+", name):
                    found["kernel"] = tar.extractfile(m).read()
                    found["version"] = name.split("vmlinuz-", 1)[1]
                elif need_base and re.fullmatch(r"(usr/)?lib/modules/[^/]+/modules\.builtin", name):
                    found["builtin"] = tar.extractfile(m).read().decode()
                elif re.search(r"\.ko(\.(xz|zst|gz))?$", name) and _modname(name) in want_modules:
                    found["modules"][_modname(name)] = _decompress_ko(name, tar.extractfile(m).read())
    finally:
        p.stdout.close()
        err = p.stderr.read().decode(errors="replace")
        if p.wait(timeout=60) != 0:
            raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed: {err}")
    return found


class _Cpio:
    """A newc ("070701") cpio archive, as the kernel's initramfs unpacker reads it."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1000

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        self.ino += 1
        nameb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08X}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nameb), 0))
        self.buf.write(hdr.encode() + nameb)
        self.buf.write(b"\0" * (-(110 + len(nameb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name):
        self._entry(name, 0o040755)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name, target):
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name, major, minor, mode=0o600):
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def _load_order(mods):
    """Module names ordered so that each comes after its dependencies."""
    order, state = [], {}

    def visit(n, depth=0):
        if depth > 50:
            raise RuntimeError("module dependency cycle")
        if state.get(n) == "done" or n not in mods:
            return
        state[n] = "busy"
        for d in module_depends(mods[n]):
            if state.get(d) != "busy":
                visit(d, depth + 1)
        state[n] = "done"
        order.append(n)
    for n in sorted(mods):
        visit(n)
    return order


def _build(out_dir, log):
    busybox = _busybox()
    if busybox is None:
        raise RuntimeError("a static busybox is missing: run scripts/setup-qemu.sh")
    pkg = _pick_kernel_package()
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".dl-") as tmp:
        t0 = time.monotonic()
        cmd = ["apt-get", "-q", "download", pkg]
        if os.geteuid() == 0:
            cmd[1:1] = ["-o", "APT::Sandbox::User=root"]
        _run(cmd, timeout=600, cwd=tmp)
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise RuntimeError(f"apt-get download {pkg} left {debs}")
        log(f"downloaded {debs[0].name} in {time.monotonic() - t0:.1f}s")

        t0 = time.monotonic()
        want = set(MODULES)
        got = _scan_deb(debs[0], want, need_base=True)
        if not got["kernel"] or got["builtin"] is None:
            raise RuntimeError(f"{debs[0].name} has no boot/vmlinuz-* or modules.builtin")
        builtin = {_modname(l.strip()) for l in got["builtin"].splitlines() if l.strip()}
        mods = {n: ko for n, ko in got["modules"].items() if n not in builtin}
        attempted = set(want)
        for _ in range(8):  # bounded: the dependency chains here are short
            missing = {d for ko in mods.values() for d in module_depends(ko)} - set(mods) - builtin
            if not missing:
                break
            if missing & attempted:
                raise RuntimeError(f"modules {sorted(missing & attempted)} are neither in "
                                   f"{debs[0].name} nor built in")
            attempted |= missing
            mods.update(_scan_deb(debs[0], missing, need_base=False)["modules"])
        absent = [n for n in MODULES if n not in mods and n not in builtin]
        if absent:
            raise RuntimeError(f"modules {absent} are neither in {debs[0].name} nor built in")
        order = _load_order(mods)
        log(f"extracted kernel {got['version']} and modules {order} in {time.monotonic() - t0:.1f}s")

    cpio = _Cpio()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "root",
              "etc", "lib", "lib/modules"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.chardev("dev/ttyS0", 4, 64)
    cpio.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    applets = _run([busybox, "--list-full"]).split()
    for a in applets:
        if a != "bin/busybox" and "/" in a:
            cpio.symlink(a, "/bin/busybox")
    if "bin/sh" not in applets:
        cpio.symlink("bin/sh", "/bin/busybox")
    for n in order:
        cpio.file(f"lib/modules/{n}.ko", mods[n])
    cpio.file("lib/modules/load-order", ("\n".join(order) + "\n").encode())
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.file("init", INIT.encode(), 0o755)
    (out_dir / "vmlinuz").write_bytes(got["kernel"])
    (out_dir / "initrd.img").write_bytes(gzip.compress(cpio.finish(), compresslevel=6))
    (out_dir / "info.json").write_text(json.dumps(
        {"package": pkg, "deb": debs[0].name, "kernel": got["version"], "modules": order,
         "busybox": busybox, "recipe": _recipe_key()}, indent=1) + "\n")


def build_guest(cache_dir=DEFAULT_CACHE, log=None):
    """Returns (kernel_path, initrd_path), building them once per recipe."""
    log = log or (lambda msg: print(f"vmguest: {msg}", file=sys.stderr))
    cache_dir = Path(cache_dir)
    hit = _cached_build(cache_dir)
    if hit:
        return hit
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it
        hit = _cached_build(cache_dir)
        if hit:
            return hit
        t0 = time.monotonic()
        final = cache_dir / _recipe_key()
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".build-"))
        tmp.chmod(0o755)
        try:
            _build(tmp, log)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"built the guest in {final} in {time.monotonic() - t0:.1f}s")
    return _cached_build(cache_dir)


def guest_info(cache_dir=DEFAULT_CACHE):
    """What build_guest used (package, kernel version, modules), or None."""
    try:
        return json.loads((Path(cache_dir) / _recipe_key() / "info.json").read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- running

def tap_flags(netns, tap):
    """The tun_flags (IFF_*) of a tap device in a netns."""
    r = subprocess.run(["ip", "netns", "exec", netns, "cat", f"/sys/class/net/{tap}/tun_flags"],
                       capture_output=True, text=True, timeout=15)
    if r.returncode != 0:
        raise RuntimeError(f"{tap} in {netns} is no tun/tap device: {r.stderr.strip()}")
    return int(r.stdout.strip(), 16)


IFF_MULTI_QUEUE = 0x0100


def random_mac():
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


class Guest:
    """A VM booted with QEMU (TCG) inside `netns`, its virtio NIC on tap `tap`.

    The NIC's QEMU netdev id is "n0" (qmp('set_link', name='n0', up=False)).
    """

    NETDEV = "n0"

    def __init__(self, netns, tap, mac=None, workdir=None, extra_args=(), append="", memory=256,
                 cache_dir=DEFAULT_CACHE, boot_timeout=90, wait=True):
        self.netns, self.tap = netns, tap
        self.mac = mac or random_mac()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vmguest-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console_log = self.workdir / "console.log"
        self.qemu_log = self.workdir / "qemu.log"
        self.qmp_path = str(self.workdir / "qmp.sock")
        self._sockdir = None
        if len(self.qmp_path) > 100:  # sun_path holds 108 bytes
            self._sockdir = tempfile.mkdtemp(prefix="vmg-")
            self.qmp_path = os.path.join(self._sockdir, "qmp.sock")
        self.proc = None
        self.events = []
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._reader = None
        self._qmp = None
        self._qmp_file = None
        self._qmp_id = 0
        self._seq = 0
        self.boot_seconds = None
        self.kernel, self.initrd = build_guest(cache_dir)

        self.multi_queue = bool(tap_flags(netns, tap) & IFF_MULTI_QUEUE)
        netdev = f"tap,id={self.NETDEV},ifname={tap},script=no,downscript=no,vhost=off,vnet_hdr=off"
        device = f"virtio-net-pci,netdev={self.NETDEV},mac={self.mac},romfile="
        if self.multi_queue:
            # QEMU sets IFF_MULTI_QUEUE only for queues > 1, and the kernel refuses
            # an attach whose flag differs from the tap's: a multi_queue tap
            # needs queues >= 2 (and a plain one queues=1).
            netdev += ",queues=2"
            device += ",mq=on,vectors=6"
        try:
            os.unlink(self.qmp_path)
        except FileNotFoundError:
            pass
        self.cmd = ["ip", "netns", "exec", netns, QEMU, "-accel", "tcg", "-m", str(memory),
                    "-nographic", "-nodefaults", "-no-user-config", "-no-reboot",
                    "-kernel", str(self.kernel), "-initrd", str(self.initrd),
                    "-append", f"{CMDLINE} {append}".strip(),
                    "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
                    "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                    "-netdev", netdev, "-device", device, *extra_args]
        self._log = open(self.console_log, "ab")
        self._qlog = open(self.qemu_log, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._qlog, start_new_session=True)
        self._reader = threading.Thread(target=self._read_console, daemon=True)
        self._reader.start()
        if wait:
            try:
                self.wait_booted(boot_timeout)
            except BaseException:
                self.close()
                raise

    # ---- lifecycle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Kills QEMU (always) and releases what it held. A workdir the caller
        gave keeps console.log and qemu.log; one made here is removed."""
        if self._qmp is not None:
            try:
                self._qmp.close()
            except OSError:
                pass
            self._qmp = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        if self.proc is not None and self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(timeout=5)
        for f in (getattr(self, "_log", None), getattr(self, "_qlog", None)):
            if f and not f.closed:
                f.close()
        try:
            os.unlink(self.qmp_path)
        except OSError:
            pass
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # ---- console

    def _read_console(self):
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if chunk:
                    self._buf += chunk
                    try:
                        self._log.write(chunk)
                        self._log.flush()
                    except (OSError, ValueError):
                        pass
                else:
                    self._cond.notify_all()
                    return
                self._cond.notify_all()

    def console_tail(self, n=3000):
        with self._cond:
            text = bytes(self._buf[-n:]).decode(errors="replace")
        qemu = ""
        try:
            qemu = self.qemu_log.read_text(errors="replace")[-1500:]
        except OSError:
            pass
        return f"--- console tail ({self.console_log}) ---\n{text}\n" + \
            (f"--- qemu stderr ---\n{qemu}\n" if qemu.strip() else "")

    def _fail(self, what):
        state = "running" if self.alive() else f"exited ({self.proc.returncode})"
        raise GuestTimeout(f"{what} (qemu {state})\n{self.console_tail()}")

    def _wait_for(self, pattern, start, deadline, what):
        """Waits until regex `pattern` (bytes) matches the console after `start`."""
        rx = re.compile(pattern)
        with self._cond:
            while True:
                m = rx.search(self._buf, start)
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._cond.wait(min(left, 0.5))
        if not self.alive():
            what = f"qemu exited ({self.proc.returncode}) before this happened: {what}"
        self._fail(what)

    def _write(self, data: bytes):
        if not self.alive():
            self._fail("qemu is not running")
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._fail("writing to the console failed")

    def wait_booted(self, timeout=90):
        """Waits for /init's ready line and a shell that answers; returns seconds."""
        deadline = self.started + timeout
        self._wait_for(READY.encode(), 0, deadline, f"the guest did not boot within {timeout}s")
        rc, out = self.run("echo ok", timeout=max(5, deadline - time.monotonic()))
        if rc != 0 or out.strip() != "ok":
            self._fail(f"the guest shell answered {rc} {out!r}")
        self.boot_seconds = time.monotonic() - self.started
        return self.boot_seconds

    def run(self, cmd, timeout=30):
        """Runs shell command `cmd` in the guest; returns (exit status, output).

        stdout and stderr come together; stdin is /dev/null. The command runs in
        a child `sh` (a `cd` or `export` does not persist). On a timeout, ^C is
        sent to the guest and GuestTimeout raised.
        """
        self._seq += 1
        tok = f"{self._seq}x{secrets.token_hex(4)}"
        b64 = base64.b64encode(cmd.encode()).decode()
        # The echo of the typed line shows "VMG""S..." with the quotes, the
        # output shows VMGS... without: only the output matches the markers.
        # Lines stay short (ash's line editor and the tty have limits).
        run = f'echo "VMG""S{tok}"; sh /tmp/.vmg.sh </dev/null 2>&1; echo "VMG""E{tok}:$?"'
        if len(b64) <= 400:
            lines = [f"echo {b64} | base64 -d >/tmp/.vmg.sh; {run}"]
        else:
            lines = [": >/tmp/.vmg.b64"] + [f"printf %s {b64[i:i + 400]} >>/tmp/.vmg.b64"
                                             for i in range(0, len(b64), 400)]
            lines.append(f"base64 -d /tmp/.vmg.b64 >/tmp/.vmg.sh; {run}")
        deadline = time.monotonic() + timeout
        with self._cond:
            start = len(self._buf)
        for line in lines:
            self._write(line.encode() + b"\n")
        try:
            s = self._wait_for(rb"VMGS" + tok.encode() + rb"\r?\n", start, deadline,
                               f"guest command {cmd!r} did not start within {timeout}s")
            e = self._wait_for(rb"VMGE" + tok.encode() + rb":(\d+)", s.end(), deadline,
                               f"guest command {cmd!r} did not finish within {timeout}s")
        except GuestTimeout:
            if self.alive():
                try:
                    self.proc.stdin.write(b"\x03\n")
                    self.proc.stdin.flush()
                except OSError:
                    pass
            raise
        with self._cond:
            out = bytes(self._buf[s.end():e.start()])
        out = out.decode(errors="replace").replace("\r\n", "\n").replace("\r", "")
        return int(e.group(1)), out

    def check(self, cmd, timeout=30):
        """run() that asserts exit status 0; returns the output."""
        rc, out = self.run(cmd, timeout)
        assert rc == 0, f"guest command {cmd!r} failed ({rc}):\n{out}"
        return out

    # ---- QMP

    def _qmp_recv(self, deadline, want_id=None):
        while True:
            self._qmp.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                line = self._qmp_file.readline()
            except (socket.timeout, OSError):
                line = b""
            if not line:
                self._fail("no QMP reply")
            msg = json.loads(line)
            if "event" in msg:
                self.events.append(msg)
                continue
            if want_id is None or msg.get("id") == want_id or "QMP" in msg:
                return msg

    def _qmp_connect(self, deadline):
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(2)
                s.connect(self.qmp_path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline or not self.alive():
                    self._fail(f"cannot connect to QMP at {self.qmp_path}")
                time.sleep(0.1)
        self._qmp, self._qmp_file = s, s.makefile("rb")
        greeting = self._qmp_recv(deadline)
        assert "QMP" in greeting, f"unexpected QMP greeting {greeting}"
        self._qmp_id += 1
        self._qmp.sendall(json.dumps({"execute": "qmp_capabilities", "id": self._qmp_id}).encode() + b"\n")
        r = self._qmp_recv(deadline, self._qmp_id)
        if "error" in r:
            raise QMPError(f"qmp_capabilities: {r['error']}")

    def qmp(self, command, _arguments=None, timeout=10, **arguments):
        """Executes a QMP command; returns its "return" member (a dict for most).

        Arguments come as keywords, or as a dict (for names with '-').
        Raises QMPError on an "error" reply.
        """
        deadline = time.monotonic() + timeout
        if self._qmp is None:
            self._qmp_connect(deadline)
        self._qmp_id += 1
        req = {"execute": command, "id": self._qmp_id}
        args = {**(_arguments or {}), **arguments}
        if args:
            req["arguments"] = args
        self._qmp.sendall(json.dumps(req).encode() + b"\n")
        r = self._qmp_recv(deadline, self._qmp_id)
        if "error" in r:
            raise QMPError(f"{command} {args}: {r['error']}")
        return r.get("return")

    def set_link(self, up):
        """Sets the NIC's link (the guest sees carrier on/off), as QMP set_link."""
        return self.qmp("set_link", name=self.NETDEV, up=bool(up))

    # ---- guest networking helpers (busybox applets)

    def configure(self, cidr, gateway=None, dev="eth0", mtu=None):
        """Gives `dev` an address (e.g. "10.99.0.2/24"), sets it up, adds a default route."""
        cmds = [f"ip addr add {cidr} dev {dev}", f"ip link set {dev} up"]
        if mtu:
            cmds.insert(0, f"ip link set {dev} mtu {int(mtu)}")
        if gateway:
            cmds.append(f"ip route add default via {gateway}")
        self.check(" && ".join(cmds))

    def ping(self, ip, count=3, wait=1, interval=None):
        """True if `ping -c count -W wait ip` in the guest exits 0."""
        iv = f" -i {interval}" if interval else ""
        rc, _ = self.run(f"ping -c {int(count)} -W {int(wait)}{iv} {ip}",
                         timeout=count * (wait + (interval or 1)) + 15)
        return rc == 0

    def ping_until(self, ip, seconds=20):
        """True once one ping gets through within `seconds`."""
        end = time.monotonic() + seconds
        for _ in range(int(seconds) + 1):
            if self.ping(ip, count=1, wait=1):
                return True
            if time.monotonic() > end:
                break
        return False

    def carrier(self, dev="eth0"):
        """/sys/class/net/DEV/carrier: 1, 0, or None when unreadable (device down)."""
        rc, out = self.run(f"cat /sys/class/net/{dev}/carrier", timeout=15)
        return int(out.strip()) if rc == 0 and out.strip() in ("0", "1") else None

    def operstate(self, dev="eth0"):
        return self.check(f"cat /sys/class/net/{dev}/operstate", timeout=15).strip()

    def wait_link(self, up, dev="eth0", timeout=10):
        """Waits until the guest sees carrier (and operstate) up or down; returns seconds."""
        t0 = time.monotonic()
        want = "1" if up else "0"
        script = (f"i=0; while [ $i -lt {int(timeout * 10)} ]; do "
                  f"c=$(cat /sys/class/net/{dev}/carrier 2>/dev/null); "
                  f"[ \"$c\" = {want} ] && {{ cat /sys/class/net/{dev}/operstate; exit 0; }}; "
                  f"sleep 0.1; i=$((i+1)); done; exit 1")
        rc, out = self.run(script, timeout=timeout * 3 + 15)
        if rc != 0:
            self._fail(f"the guest's {dev} carrier did not become {want} within {timeout}s "
                       f"(operstate {self.operstate(dev)})")
        return time.monotonic() - t0

    MAX_SEND_BYTES = 96 << 20  # a file in the guest's tmpfs (half of its RAM)

    def send_tcp(self, ip, port, nbytes=None, timeout=30, block=65536):
        """Bulk TCP to ip:port with busybox nc, bounded by `timeout` seconds;
        returns (exit status, output).

        With `nbytes` (<= MAX_SEND_BYTES, rounded up to `block`) nc sends a file
        of that many zeros from the guest's tmpfs and closes at its end; with
        None it streams /dev/zero until the peer closes or `timeout` kills it
        (exit status 143 then). Feeding nc from a file, not a pipe (`dd | nc`),
        matters: under TCG a pipe caps the sender near 30 Mbit/s.
        """
        t = int(math.ceil(timeout))
        if nbytes is None:
            return self.run(f"timeout {t} nc -w 5 {ip} {int(port)} </dev/zero", timeout=t + 15)
        count = max(1, math.ceil(nbytes / block))
        if count * block > self.MAX_SEND_BYTES:
            raise ValueError(f"send_tcp: {nbytes} bytes > {self.MAX_SEND_BYTES}; use nbytes=None")
        size = count * block
        rc, out = self.run(f"[ \"$(stat -c %s /tmp/.vmg.blob 2>/dev/null)\" = {size} ] || "
                           f"dd if=/dev/zero of=/tmp/.vmg.blob bs={block} count={count} 2>&1", timeout=60)
        if rc != 0:
            return rc, out
        return self.run(f"timeout {t} nc -w 5 {ip} {int(port)} </tmp/.vmg.blob", timeout=t + 15)


# ---------------------------------------------------------------- host side

_RECEIVER = r"""
import json, socket, sys, time
port, expect, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + timeout
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(1)
s.settimeout(timeout)
print("ready", flush=True)
res = {"bytes": 0, "seconds": 0.0, "bps": 0.0, "error": None}
try:
    c, peer = s.accept()
    res["peer"] = peer[0]
    first = last = None
    while res["bytes"] < expect:
        left = end - time.monotonic()
        if left <= 0:
            res["error"] = "timeout"
            break
        c.settimeout(min(left, 5))
        try:
            d = c.recv(1 << 20)
        except socket.timeout:
            res["error"] = "stalled"
            break
        if not d:
            break
        now = time.monotonic()
        if first is None:
            first = now
        last = now
        res["bytes"] += len(d)
    c.close()
    if first is not None and last > first:
        res["seconds"] = last - first
        res["bps"] = res["bytes"] * 8 / res["seconds"]
except socket.timeout:
    res["error"] = "no connection"
print(json.dumps(res), flush=True)
"""


class TcpReceiver:
    """Host-side TCP sink in a netns: counts bytes and time until `expect` bytes,
    EOF or `timeout`. The rate is measured from the first to the last byte."""

    def __init__(self, netns, port, expect, timeout=30):
        self.timeout = timeout
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", _RECEIVER, str(port), str(int(expect)),
             str(timeout)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self._readline(10)
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"the receiver did not start: {line!r} {self.proc.stderr.read()}")

    def _readline(self, timeout):
        box = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        return box[0] if box else ""

    def result(self):
        """{"bytes", "seconds", "bps" (bit/s), "error"}; waits for the receiver to end."""
        try:
            out, err = self.proc.communicate(timeout=self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.close()
            raise GuestTimeout("the receiver did not finish")
        assert self.proc.returncode == 0, f"receiver failed ({self.proc.returncode}): {err}"
        return json.loads(out.strip().splitlines()[-1])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def measure_tcp_rate(guest, netns, ip, port=5201, nbytes=16 << 20, timeout=30, seconds=None):
    """Guest -> netns TCP bulk transfer, received by a TcpReceiver on `port` in
    `netns` (`ip` is its address there). Sends `nbytes`, or streams for `seconds`
    when given. Returns the receiver's result (bytes, seconds, bps, error) plus
    the sender's exit status and output as "sender_rc"/"sender_output"."""
    if seconds is not None:
        with TcpReceiver(netns, port, 1 << 40, seconds + 20) as rx:
            rc, out = guest.send_tcp(ip, port, None, timeout=seconds)
            res = rx.result()
    else:
        with TcpReceiver(netns, port, nbytes, timeout) as rx:
            rc, out = guest.send_tcp(ip, port, nbytes, timeout=timeout)
            res = rx.result()
    res["sender_rc"], res["sender_output"] = rc, out
    return res


def image_or_skip(test_name):
    """The guest image for a test module: built (or taken from the cache),
    or the test skipped with a printed reason when this machine cannot run
    a guest."""
    import pytest

    reason = why_cannot_run()
    if reason:
        print(f"SKIP {test_name}: {reason}", file=sys.stderr)
        pytest.skip(reason)
    t0 = time.monotonic()
    image = build_guest()
    print(f"vmguest: guest image ready in {time.monotonic() - t0:.1f}s: {guest_info()}", file=sys.stderr)
    return image
