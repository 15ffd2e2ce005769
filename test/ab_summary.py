"""Medians and ratio of an A/B run: lines "LABEL value cpu_us" in RUNS.

  python3 test/ab_summary.py RUNS A B UNIT
prints, for A and B, the median of the values and of esd's CPU per UNIT,
then B/A for both (test/ab.sh, test/security-ab.sh).
"""
import statistics
import sys

path, a, b, unit = sys.argv[1:5]
runs, cpu = {}, {}
for line in open(path):
    k, v, c = line.split()
    runs.setdefault(k, []).append(float(v))
    cpu.setdefault(k, []).append(float(c))
m = {k: statistics.median(v) for k, v in runs.items()}
mc = {k: statistics.median(v) for k, v in cpu.items()}
for k in (a, b):
    print("%s %ss/s: median %.0f of %s" % (k, unit, m[k], " ".join("%.0f" % x for x in runs[k])))
    print("%s esd CPU us/%s: median %.1f of %s" % (k, unit, mc[k], " ".join("%.1f" % x for x in cpu[k])))
print("%s_vs_%s %.3f (throughput), %.3f (esd CPU per %s)" % (b, a, m[b] / m[a], mc[b] / mc[a], unit))
