#!/usr/bin/env bash
# sixgate's main job in three network namespaces on this machine:
#
#   client (IPv4 only, 192.0.2.2) -- broker (192.0.2.1 | 2001:db8:ffff::1) -- inet (2001:db8:ffff::2)
#
# The broker hands the client an IPv6 address from 2001:db8:100::100/120 over
# IKEv2 (the example certificates), and the client pings the IPv6-only inet
# host through ESP-in-UDP. Everything is removed afterwards, also on failure.
# Run as root: bash demo/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

need() { command -v "$1" >/dev/null 2>&1; }
if ! need ip || ! need ping; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 iputils-ping >/dev/null
fi
cargo build --release -q -p sixgate-broker -p sixgate-client
bin=$repo/target/release

id=$$
c=sgdemo-c-$id b=sgdemo-b-$id i=sgdemo-i-$id
work=$(mktemp -d)
cleanup() {
    set +e
    [ -n "${client_pid:-}" ] && kill "$client_pid" 2>/dev/null && wait "$client_pid" 2>/dev/null
    [ -n "${broker_pid:-}" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    for ns in $c $b $i; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

for ns in $c $b $i; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add sgd-c$id netns $c type veth peer name sgd-b$id netns $b
ip link add sgd-i$id netns $i type veth peer name sgd-x$id netns $b
ip -n $c addr add 192.0.2.2/24 dev sgd-c$id && ip -n $c link set sgd-c$id up
ip -n $b addr add 192.0.2.1/24 dev sgd-b$id && ip -n $b link set sgd-b$id up
ip -n $b addr add 2001:db8:ffff::1/64 dev sgd-x$id nodad && ip -n $b link set sgd-x$id up
ip -n $i addr add 2001:db8:ffff::2/64 dev sgd-i$id nodad && ip -n $i link set sgd-i$id up
ip -n $i -6 route add 2001:db8:100::/64 via 2001:db8:ffff::1

certs=$repo/certs-example/ecdsa
cat >"$work/broker.toml" <<TOML
[ike]
listen = ["192.0.2.1"]
identity = "broker.example.net"
certificate = "$certs/broker.pem"
private_key = "$certs/broker.key"
ca = ["$certs/ca.pem"]
[pool]
prefix = "2001:db8:100::100/120"
dns = ["2001:db8:ffff::53"]
[pool.static]
"client2@example.net" = "2001:db8:100::1ff"
[dataplane]
backend = "userspace"
[storage]
path = "$work/broker-state"
TOML
cat >"$work/client.toml" <<TOML
broker = "192.0.2.1"
broker_identity = "broker.example.net"
identity = "client@example.net"
certificate = "$certs/client.pem"
private_key = "$certs/client.key"
ca = ["$certs/ca.pem"]
control_socket = "$work/client.sock"
[dataplane]
backend = "userspace"
TOML

echo "== starting the broker"
ip netns exec $b "$bin/sixgate-broker" run --config "$work/broker.toml" &
broker_pid=$!
for _ in $(seq 100); do [ -S "$work/broker-state/broker.sock" ] && break; sleep 0.1; done
echo "== starting the client"
ip netns exec $c "$bin/sixgate-client" up --config "$work/client.toml" &
client_pid=$!
for _ in $(seq 200); do
    ip netns exec $c "$bin/sixgate-client" status --config "$work/client.toml" 2>/dev/null | grep -q "state: *up" && break
    sleep 0.1
done
echo "== client status"
ip netns exec $c "$bin/sixgate-client" status --config "$work/client.toml"
echo "== the client's address (no 'deprecated'; preferred_lft forever)"
ip -n $c -6 addr show dev sgc0
ip -n $c -6 route get 2001:db8:ffff::2
echo "== ping the IPv6-only inet host from the IPv4-only client"
ip netns exec $c ping -6 -c 3 -W 2 2001:db8:ffff::2
echo "== broker status and leases"
ip netns exec $b "$bin/sixgate-broker" status --config "$work/broker.toml"
ip netns exec $b "$bin/sixgate-broker" leases --config "$work/broker.toml"
echo "== done: the client reached 2001:db8:ffff::2 through the tunnel"
