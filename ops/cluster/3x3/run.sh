#!/bin/sh
# Starts the nine nodes of ops/cluster/3x3 in the background from the
# repository root (after `cargo build -p geodb-server`); logs go to
# /tmp/geodb-3x3/n<i>.log. Stop them with: kill $(cat /tmp/geodb-3x3/pids)
set -eu
mkdir -p /tmp/geodb-3x3
: > /tmp/geodb-3x3/pids
for i in 1 2 3 4 5 6 7 8 9; do
    target/debug/geodb start --config "ops/cluster/3x3/node$i.toml" > "/tmp/geodb-3x3/n$i.log" 2>&1 &
    echo $! >> /tmp/geodb-3x3/pids
done
echo "gateways: http://127.0.0.1:7070 (us-east), http://127.0.0.4:7070 (us-central), http://127.0.0.7:7070 (eu-west)"
