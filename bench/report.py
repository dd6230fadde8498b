#!/usr/bin/env python3
"""Markdown report for bench/run.sh: min/median/max per topology and metric,
ratios of medians to `wire`, and the headline ratios. Standard library only.

    python3 bench/report.py bench/results/<timestamp>.tsv
"""
import csv
import statistics
import sys
from collections import defaultdict

TOPOS = ["wire", "bridge", "ovs-afxdp", "switchd", "switchd-norps", "switchd-2t", "wire+offload", "bridge+offload"]
# metric, column title, format, ratio reference ("wire" or None)
COLUMNS = [
    ("udp_rx_pps", "UDP 60 B received, kpps", lambda v: f"{v / 1000:.0f}", True),
    ("udp_loss_pct", "UDP loss %", lambda v: f"{v:.1f}", False),
    ("tcp_gbps", "TCP 1 stream, Gbit/s", lambda v: f"{v:.2f}", True),
    ("tcp_retr", "TCP retransmits", lambda v: f"{v:.0f}", False),
    ("rtt_p50_us", "RTT p50, µs", lambda v: f"{v:.1f}", True),
    ("udp_switch_cpu_s", "switch CPU s during UDP", lambda v: f"{v:.2f}", False),
    ("tcp_switch_cpu_s", "switch CPU s during TCP", lambda v: f"{v:.2f}", False),
]


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


def main(path):
    meta = []
    data = defaultdict(dict)  # (topo, metric) -> {rep: value or str}
    failed = defaultdict(list)  # topo -> [(rep, reason)]
    with open(path, newline="") as f:
        rows = []
        for line in f:
            if line.startswith("#"):
                meta.append(line[1:].strip())
            else:
                rows.append(line)
    for r in csv.DictReader(rows, delimiter="\t"):
        rep, topo, metric, value = int(r["rep"]), r["topology"], r["metric"], r["value"]
        if metric == "status":
            if value != "ok":
                failed[topo].append((rep, r["note"]))
            continue
        data[(topo, metric)][rep] = num(value) if num(value) is not None else value

    present = [t for t in TOPOS if any(k[0] == t for k in data) or t in failed]

    def values(topo, metric):
        return [v for v in data.get((topo, metric), {}).values() if isinstance(v, float)]

    def median(topo, metric):
        v = values(topo, metric)
        return statistics.median(v) if v else None

    def cell(topo, metric, fmt):
        raw = data.get((topo, metric), {})
        v = values(topo, metric)
        if not v:
            return "-" if raw else ""
        if len(v) == 1:
            return fmt(v[0])
        return f"{fmt(statistics.median(v))} [{fmt(min(v))}–{fmt(max(v))}]"

    def ref(topo):
        return "wire+offload" if topo.endswith("+offload") else "wire"

    out = []
    out.append("# podswitch benchmark\n")
    for m in meta:
        out.append(f"- {m}")
    out.append("")
    out.append("Cells: median [min–max] over the repetitions. Pod offloads OFF except the `+offload` rows (TCP only).")
    out.append("Switch CPU = utime+stime of ovs-vswitchd / switchd over the whole measurement "
               "(`-`: kernel bridge/veth, work done in softirq and not attributable).\n")
    cols = [c for c in COLUMNS if any(values(t, c[0]) or data.get((t, c[0])) for t in present)]
    out.append("| topology | n | " + " | ".join(c[1] for c in cols) + " |")
    out.append("|---|---|" + "---|" * len(cols))
    for t in present:
        reps = {rep for (tt, _), d in data.items() if tt == t for rep in d}
        n = f"{len(reps)}" + (f" ({len(failed[t])} failed)" if failed[t] else "")
        out.append(f"| `{t}` | {n} | " + " | ".join(cell(t, c[0], c[2]) for c in cols) + " |")
    out.append("")

    out.append("Ratio of medians to `wire` (same run; `+offload` rows relative to `wire+offload`). "
               "Throughput: higher is better; RTT: lower is better.\n")
    rcols = [c for c in cols if c[3]]
    out.append("| topology | " + " | ".join(c[1].split(",")[0] for c in rcols) + " |")
    out.append("|---|" + "---|" * len(rcols))
    for t in present:
        cells = []
        for c in rcols:
            a, b = median(t, c[0]), median(ref(t), c[0])
            cells.append(f"{a / b:.2f}" if a is not None and b else "")
        out.append(f"| `{t}` | " + " | ".join(cells) + " |")
    out.append("")

    def headline(label, ta, tb, metric):
        a, b = median(ta, metric), median(tb, metric)
        if a is None or not b:
            return f"{label} = n/a ({ta if a is None else tb} has no result)"
        da, db = data.get((ta, metric), {}), data.get((tb, metric), {})
        paired = [da[r] / db[r] for r in sorted(da) if r in db
                  and isinstance(da[r], float) and isinstance(db[r], float) and db[r]]
        per = f" (per rep: {', '.join(f'{x:.2f}' for x in paired)})" if paired else ""
        return f"{label} = {a / b:.2f}{per}"

    out.append("- " + headline("switchd UDP pps / ovs-afxdp", "switchd", "ovs-afxdp", "udp_rx_pps"))
    out.append("- " + headline("switchd-norps UDP pps / ovs-afxdp", "switchd-norps", "ovs-afxdp", "udp_rx_pps"))
    out.append("- " + headline("switchd-norps TCP / bridge (offloads off)", "switchd-norps", "bridge", "tcp_gbps"))
    out.append("- " + headline("switchd TCP / bridge (offloads off)", "switchd", "bridge", "tcp_gbps"))
    out.append("- " + headline("switchd TCP / ovs-afxdp", "switchd", "ovs-afxdp", "tcp_gbps"))
    out.append("- " + headline("switchd RTT p50 / ovs-afxdp", "switchd", "ovs-afxdp", "rtt_p50_us"))
    out.append("- " + headline("switchd-2t UDP pps / switchd", "switchd-2t", "switchd", "udp_rx_pps"))
    out.append("- " + headline("switchd-2t TCP / switchd", "switchd-2t", "switchd", "tcp_gbps"))
    out.append("- " + headline("switchd TCP / bridge (offloads on)", "switchd", "bridge+offload", "tcp_gbps"))
    for t in ("switchd", "ovs-afxdp"):
        v = values(t, "idle_cpu_pct")
        if v:
            rng = f" (min {min(v):.1f}, max {max(v):.1f})" if len(v) > 1 else ""
            name = "idle switchd CPU" if t == "switchd" else "idle ovs-vswitchd CPU (pmd busy-polls by design)"
            out.append(f"- {name} = {statistics.median(v):.1f} %{rng} of one core, 2 ports, no traffic")
    for t in present:
        for c in COLUMNS:
            if not c[3]:
                continue
            d = data.get((t, c[0]), {})
            v = [d[r] for r in sorted(d) if isinstance(d[r], float)]
            if len(v) > 1 and min(v) > 0 and max(v) / min(v) > 1.5:
                out.append(f"- spread: `{t}` {c[1]} per rep {', '.join(c[2](x) for x in v)} "
                           f"(max/min {max(v) / min(v):.1f}): the median hides a bimodal or noisy result")
    for t in present:
        for rep, reason in failed[t]:
            out.append(f"- **{t} failed** in rep {rep}: {reason}")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
