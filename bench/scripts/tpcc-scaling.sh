#!/bin/bash
# How TPC-C's cost grows with the work (docs/benchmarks.md, "How cost grows
# with the warehouses"): for W warehouses and T terminals, GeoDB over its
# PostgreSQL wire protocol on a fresh `geodb dev` single node, then
# PostgreSQL 15 on a fresh private cluster (as root: it runs initdb as the
# postgres user), 60 s measured each. After each run it appends
# `target,warehouses,tpmc,bytes_on_disk,memory_kib` to $OUT (default
# /tmp/bench/scaling.csv): the data directory's size (du) and the server's
# proportional set size (GeoDB's process; the postmaster and its children).
#
# usage: bench/scripts/tpcc-scaling.sh W T SEED   (from the repository root,
#        after cargo build --release -p geodb-server -p geodb-bench)
set -u
W=$1; T=$2; SEED=$3
OUT=${OUT:-/tmp/bench/scaling.csv}
mkdir -p /tmp/bench
[ -s "$OUT" ] || echo "target,warehouses,tpmc,bytes_on_disk,memory_kib" > "$OUT"
pss() { local sum=0; for p in "$@"; do v=$(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null); sum=$((sum + ${v:-0})); done; echo $sum; }
tpmc() { awk '/^tpmC/ {print $2; exit}' "$1"; }

d=/tmp/bench/scaling-geodb-$W; rm -rf $d
target/release/geodb dev --regions 1 --nodes-per-region 1 --http 127.0.0.1:7770 --pg 127.0.0.1:7771 --data-dir $d > $d.log 2>&1 &
g=$!
for _ in $(seq 100); do grep -q "GeoDB is ready" $d.log && break; sleep 0.2; done
target/release/geodb-bench tpcc --target geodb-pg=postgresql://127.0.0.1:7771/geodb --warehouses $W --terminals $T \
  --duration-s 60 --warmup-s 5 --seed $SEED --out-dir /tmp/bench/scaling > /tmp/bench/scaling-geodb-$W.out 2>&1
echo "GeoDB,$W,$(tpmc /tmp/bench/scaling-geodb-$W.out),$(du -sb $d | cut -f1),$(pss $g)" >> "$OUT"
kill $g; wait $g; rm -rf $d

pd=/tmp/bench/scaling-pg-$W; rm -rf $pd; mkdir -p $pd && chown postgres $pd
su postgres -c "/usr/lib/postgresql/15/bin/initdb -D $pd/data" > /dev/null 2>&1
su postgres -c "/usr/lib/postgresql/15/bin/pg_ctl -D $pd/data -o '-p 5498 -k $pd' -l $pd/log start" > /dev/null
target/release/geodb-bench tpcc --target postgres=postgresql://postgres@127.0.0.1:5498/postgres --warehouses $W --terminals $T \
  --duration-s 60 --warmup-s 5 --seed $SEED --out-dir /tmp/bench/scaling > /tmp/bench/scaling-pg-$W.out 2>&1
pm=$(head -1 $pd/data/postmaster.pid)
echo "PostgreSQL,$W,$(tpmc /tmp/bench/scaling-pg-$W.out),$(du -sb $pd/data | cut -f1),$(pss $pm $(pgrep -P $pm))" >> "$OUT"
su postgres -c "/usr/lib/postgresql/15/bin/pg_ctl -D $pd/data stop" > /dev/null
rm -rf $pd
