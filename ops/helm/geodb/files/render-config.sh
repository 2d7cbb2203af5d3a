#!/bin/sh
# Renders this pod's geodb.toml, run by the init container of every GeoDB pod.
#
# The node id, zone and peers come from the pod's StatefulSet ordinal and the
# list of regions, never from a hand-written list of nodes:
#   node id = the region's first_id + ordinal; zone = the region's zones in
#   turn; every node of every region is <region>-<name>-<ordinal>.<domain>,
#   the per-node Service in front of that pod.
#
# GeoDB's config takes IP addresses, so each name is resolved here. A per-node
# Service keeps its virtual IP for its whole life, whichever pod IP is behind
# it, so the addresses stay right across restarts and rolling upgrades (a pod
# IP, as the headless Service gives, changes at every restart). A name that
# does not resolve yet (a region not deployed yet) is waited for.
#
# Inputs: POD_NAME and GEODB_REGION (environment); GEODB_NAME (default geodb);
# GEODB_TEMPLATE_DIR with geodb.toml.in and regions (default
# /etc/geodb/template); output GEODB_CONFIG (default /etc/geodb/run/geodb.toml).
set -eu

template_dir=${GEODB_TEMPLATE_DIR:-/etc/geodb/template}
output=${GEODB_CONFIG:-/etc/geodb/run/geodb.toml}
name=${GEODB_NAME:-geodb}
# Long enough for the other regions to be applied by hand; the pod restarts
# the init container after a failure anyway.
resolve_wait_s=${GEODB_RESOLVE_WAIT_S:-600}
: "${POD_NAME:?the pod name, from the downward API}"
: "${GEODB_REGION:?this pod region}"

fail() {
    echo "render-config: $*" >&2
    exit 1
}

ordinal=${POD_NAME##*-}
case $ordinal in
    '' | *[!0-9]*) fail "pod name $POD_NAME does not end in a StatefulSet ordinal" ;;
esac

# zone_of ZONES ORDINAL: the ORDINAL-th of the comma-separated ZONES, in turn.
zone_of() {
    echo "$1" | tr ',' '\n' | awk -v ordinal="$2" '{ zones[NR - 1] = $0 } END { print zones[ordinal % NR] }'
}

# resolve HOST: its IPv4 address, once DNS knows it.
resolve() {
    deadline=$(($(date +%s) + resolve_wait_s))
    while :; do
        address=$(getent ahostsv4 "$1" | awk 'NR == 1 { print $1 }')
        if [ -n "$address" ]; then
            echo "$address"
            return 0
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "render-config: $1 did not resolve within ${resolve_wait_s}s" >&2
            return 1
        fi
        sleep 2
    done
}

regions=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$template_dir/regions")
node_id=""
nodes=""
while read -r region first_id count zones domain; do
    [ -n "$domain" ] || fail "regions: a line needs region, first_id, nodes, zones and domain"
    i=0
    while [ "$i" -lt "$count" ]; do
        id=$((first_id + i))
        zone=$(zone_of "$zones" "$i")
        if [ "$region" = "$GEODB_REGION" ] && [ "$i" -eq "$ordinal" ]; then
            # This node listens on every interface of its pod.
            node_id=$id
            node_zone=$zone
            address=0.0.0.0
        else
            address=$(resolve "$region-$name-$i.$domain") || exit 1
        fi
        nodes="$nodes
[[cluster.nodes]]
id = $id
region = \"$region\"
zone = \"$zone\"
http = \"$address:7070\"
peer = \"$address:7100\"
"
        i=$((i + 1))
    done
done <<EOF
$regions
EOF

[ -n "$node_id" ] || fail "pod $POD_NAME (ordinal $ordinal) is not among the nodes of region $GEODB_REGION in regions"

sed -e "s/@NODE_ID@/$node_id/" -e "s/@REGION@/$GEODB_REGION/" -e "s/@ZONE@/$node_zone/" \
    "$template_dir/geodb.toml.in" >"$output.tmp"
printf '%s\n' "$nodes" >>"$output.tmp"
mv "$output.tmp" "$output"
echo "render-config: node $node_id, region $GEODB_REGION, zone $node_zone"
