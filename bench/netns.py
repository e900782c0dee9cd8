"""A link shaped by the kernel: a device network namespace joined to this one by a veth pair, each direction
rate-limited by a token bucket (`tc qdisc ... tbf`).

    this namespace (the edge)  host_address ==veth== device_address  the device's namespace
    downlink: tbf on the host end's egress            uplink: tbf on the device end's egress

The bucket holds two full Ethernet frames (BURST), so a message crosses at the rate, not in one burst; its queue
(LIMIT) is deep enough that nothing is dropped (a drop would add TCP's retransmission timer, which no link model
here predicts). The rate counts every byte of each frame (Ethernet, IP and TCP headers included), as
stac.link.on_wire does. A rate can change while traffic flows (``set_rate``): a trace is followed as a schedule of
rates (``follow``). The namespaces add no delay of their own (~0.05 ms round trip); netem, which adds delay, is not
available on every machine, so a round trip is what the stack itself measures (``stac-bench ping``).

Needs root (CAP_NET_ADMIN), iproute2's ``ip`` and ``tc``; ``unavailable()`` says why not, before anything is made.
Traffic stays on the addresses made here: a /30 of 10.231.0.0/16 that no interface of this machine uses.
"""
from __future__ import annotations

import ipaddress
import math
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path

BURST = 2 * 1514  # bytes: two full Ethernet frames
LIMIT = 4 << 20  # bytes the queue holds before it drops
POOL = ipaddress.ip_network("10.231.0.0/16")


class NetnsError(RuntimeError):
    pass


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise NetnsError(f"{' '.join(command)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


def unavailable() -> str | None:
    """Why a shaped link cannot be made here (None if it can): tried by making and removing one namespace."""
    if os.geteuid() != 0:
        return "network namespaces and tc need root (CAP_NET_ADMIN)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"iproute2's {tool} is not installed (apt-get install iproute2)"
    name = f"stacprobe{secrets.token_hex(3)}"
    try:
        _run(["ip", "netns", "add", name])
        _run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "1mbit",
              "burst", str(BURST), "limit", str(LIMIT)])
    except NetnsError as e:
        return f"cannot make a rate-limited namespace: {e}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    used = [ipaddress.ip_interface(word).network for line in _run(["ip", "-o", "-4", "addr"]).splitlines()
            for word in line.split()[3:4]]
    for _ in range(100):
        subnet = ipaddress.ip_network(f"{POOL.network_address + 4 * secrets.randbelow(POOL.num_addresses // 4)}/30")
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    raise NetnsError(f"no free /30 in {POOL}")


def rate_spec(bps: float) -> str:
    """tc's spelling of a rate in bit/s (whole bits)."""
    return f"{max(1, round(bps))}bit"


class ShapedLink:
    """``with ShapedLink(up_bps, down_bps) as link``: ``link.prefix`` runs a command in the device's namespace,
    which reaches this one at ``link.host_address``."""

    def __init__(self, up_bps: float, down_bps: float):
        tag = secrets.token_hex(3)
        self.namespace, self.host_if, self.device_if = f"stac{tag}", f"stach{tag}", f"stacd{tag}"
        self.up_bps, self.down_bps = up_bps, down_bps
        self.made: list[str] = []
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def __enter__(self) -> "ShapedLink":
        try:
            subnet = _free_subnet()
            host, device = list(subnet.hosts())
            self.host_address, self.device_address = str(host), str(device)
            _run(["ip", "netns", "add", self.namespace])
            self.made.append("netns")
            _run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.device_if])
            self.made.append("veth")
            _run(["ip", "link", "set", self.device_if, "netns", self.namespace])
            _run(["ip", "addr", "add", f"{host}/30", "dev", self.host_if])
            # one segment per frame, as on a real link: no GSO super-frames, so the rate and the counters see
            # every segment's headers
            _run(["ip", "link", "set", self.host_if, "gso_max_segs", "1"])
            _run(self.prefix + ["ip", "link", "set", self.device_if, "gso_max_segs", "1"])
            _run(["ip", "link", "set", self.host_if, "up"])
            _run(self.prefix + ["ip", "addr", "add", f"{device}/30", "dev", self.device_if])
            _run(self.prefix + ["ip", "link", "set", self.device_if, "up"])
            _run(self.prefix + ["ip", "link", "set", "lo", "up"])
            self.set_rate(self.up_bps, self.down_bps)
        except BaseException:
            self.close()
            raise
        return self

    def set_rate(self, up_bps: float | None = None, down_bps: float | None = None) -> None:
        """Change either direction's rate now (inf: no limit); queued bytes stay queued."""
        for bps, prefix, interface in ((up_bps, self.prefix, self.device_if), (down_bps, [], self.host_if)):
            if bps is None:
                continue
            if math.isinf(bps):
                subprocess.run(prefix + ["tc", "qdisc", "del", "dev", interface, "root"], capture_output=True)
            else:
                _run(prefix + ["tc", "qdisc", "replace", "dev", interface, "root", "tbf", "rate", rate_spec(bps),
                               "burst", str(BURST), "limit", str(LIMIT)])

    def follow(self, spans: list[tuple[float, float]], start: float) -> None:
        """From ``start`` (time.monotonic), the uplink's rate follows (seconds, bit/s) spans, repeating, until
        stop_following() or close(); in a thread of its own."""
        self.stop_following()
        self._stop.clear()

        def schedule():
            t, now = start, None
            while not self._stop.is_set():
                for seconds, bps in spans:
                    if self._stop.wait(max(0.0, t - time.monotonic())):
                        return
                    if bps != now:  # tc refills the bucket at every change: only a new rate is one
                        now = bps
                        self.set_rate(up_bps=max(bps, 8.0))  # a span with no opportunity: the slowest tc allows
                    t += seconds

        self._follower = threading.Thread(target=schedule, daemon=True)
        self._follower.start()

    def sent_bytes(self) -> tuple[int, int]:
        """Bytes that have left each end so far: (uplink, downlink), every header included."""
        up = _run(self.prefix + ["cat", f"/sys/class/net/{self.device_if}/statistics/tx_bytes"])
        down = Path(f"/sys/class/net/{self.host_if}/statistics/tx_bytes").read_text()
        return int(up), int(down)

    def stop_following(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join()
            self._follower = None

    def close(self) -> None:
        self.stop_following()
        if "veth" in self.made:  # removing one end removes its peer
            subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        if "netns" in self.made:
            subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
        self.made.clear()

    def __exit__(self, *exc) -> None:
        self.close()
