#!/usr/bin/env python3
"""Draws docs/img/tpcc-scaling.svg from a CSV of TPC-C scaling runs.

Input rows: target,warehouses,tpmc,bytes_on_disk,memory_kib (a header line
first). Three panels side by side (tpmC, bytes on disk, memory), one line per
target, warehouses on a log axis. Plain SVG, no dependencies.
"""
import csv
import math
import sys

COLOURS = {"GeoDB": "#1f77b4", "PostgreSQL": "#d62728"}
PANELS = [("tpmC", "tpmc", 1), ("bytes on disk (GB)", "bytes_on_disk", 1e9), ("memory, PSS (MB)", "memory_kib", 1e3)]
W, H, PAD = 300, 240, 48


def main(source, target):
    rows = list(csv.DictReader(open(source)))
    warehouses = sorted({int(r["warehouses"]) for r in rows})
    targets = sorted({r["target"] for r in rows}, key=lambda t: t != "GeoDB")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(PANELS)}" height="{H + 30}" font-family="sans-serif" font-size="11">']
    out.append(f'<rect width="{W * len(PANELS)}" height="{H + 30}" fill="white"/>')
    lo, hi = math.log(warehouses[0]), math.log(warehouses[-1])
    for p, (title, field, scale) in enumerate(PANELS):
        x0 = p * W
        values = [float(r[field]) / scale for r in rows]
        top = max(values) * 1.1
        px = lambda w: x0 + PAD + (math.log(w) - lo) / (hi - lo or 1) * (W - PAD - 16)
        py = lambda v: H - PAD + 8 - v / top * (H - PAD - 24)
        out.append(f'<text x="{x0 + W / 2}" y="14" text-anchor="middle" font-weight="bold">{title}</text>')
        out.append(f'<line x1="{x0 + PAD}" y1="{py(0)}" x2="{x0 + W - 16}" y2="{py(0)}" stroke="black"/>')
        out.append(f'<line x1="{x0 + PAD}" y1="{py(0)}" x2="{x0 + PAD}" y2="{py(top)}" stroke="black"/>')
        for i in range(5):
            v = top * i / 4
            out.append(f'<text x="{x0 + PAD - 4}" y="{py(v) + 4}" text-anchor="end">{v:,.0f}</text>' if top >= 10
                       else f'<text x="{x0 + PAD - 4}" y="{py(v) + 4}" text-anchor="end">{v:.1f}</text>')
        for w in warehouses:
            out.append(f'<text x="{px(w)}" y="{py(0) + 14}" text-anchor="middle">{w}</text>')
        out.append(f'<text x="{x0 + W / 2}" y="{py(0) + 28}" text-anchor="middle">warehouses</text>')
        for t in targets:
            points = sorted((int(r["warehouses"]), float(r[field]) / scale) for r in rows if r["target"] == t)
            path = " ".join(f"{px(w):.1f},{py(v):.1f}" for w, v in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS.get(t, "gray")}" stroke-width="2"/>')
            for w, v in points:
                out.append(f'<circle cx="{px(w):.1f}" cy="{py(v):.1f}" r="3" fill="{COLOURS.get(t, "gray")}"/>')
    for i, t in enumerate(targets):
        out.append(f'<rect x="{PAD + i * 110}" y="{H + 14}" width="10" height="10" fill="{COLOURS.get(t, "gray")}"/>')
        out.append(f'<text x="{PAD + i * 110 + 14}" y="{H + 23}">{t}</text>')
    out.append("</svg>")
    open(target, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
