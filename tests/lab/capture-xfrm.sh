#!/bin/bash
# Captures the netlink bytes iproute2 sends for the XFRM states and
# policies sixgate installs, and the kernel's dumps of them, as hex text
# for dataplane/tests/xfrm_bytes.rs. Needs a kernel with ESP, so run it
# inside the test VM:
#   vng -r /boot/vmlinuz-6.1.0-*-amd64 --disable-kvm --memory 1G -- \
#     'modprobe esp4 && tests/lab/capture-xfrm.sh dataplane/tests/data/xfrm'
# Each file holds the command on its first line, then one line of hex per
# netlink datagram.
set -euo pipefail
out=${1:?output directory}
mkdir -p "$out"
ns=capxfrm$$
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT

# capture NAME SYSCALL COMMAND...: the data of every SYSCALL (sendmsg or
# recvmsg) on netlink made by COMMAND, one datagram per line.
capture() {
    local name=$1 call=$2
    shift 2
    local log
    log=$(mktemp)
    if [ "$call" = sendmsg ]; then io=write; else io=read; fi
    ip netns exec "$ns" strace -qq -e trace="$call" -e "$io=all" -o "$log" "$@"
    {
        echo "# $*"
        awk -v call="$call" '
            $0 ~ "^" call "\\(" { if (hex != "") print hex; hex = ""; next }
            /^ \| [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]  / {
                # the hex columns only, not the ASCII rendering beside them
                n = split(substr($0, 11, 49), b, " ")
                for (i = 1; i <= n; i++) hex = hex b[i]
                next
            }
            END { if (hex != "") print hex }
        ' "$log"
    } >"$out/$name.txt"
    rm -f "$log"
}

gcm_key=0x000102030405060708090a0b0c0d0e0f10111213
chacha_key=0x202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40414243
cbc_key=0x505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f
hmac_key=0x707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f

capture state-gcm-encap sendmsg ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp \
    spi 0xc0ffee01 reqid 0x5a600001 mode tunnel flag af-unspec flag esn replay-window 1024 \
    aead 'rfc4106(gcm(aes))' $gcm_key 128 encap espinudp 4500 4500 0.0.0.0 \
    limit byte-soft 1000000 limit byte-hard 2000000 limit time-soft 3000 limit time-hard 7200 \
    if_id 0x5a6
capture state-chacha sendmsg ip xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp \
    spi 0xc0ffee02 reqid 0x5a600001 mode tunnel flag af-unspec replay-window 0 \
    aead 'rfc7539esp(chacha20,poly1305)' $chacha_key 128
capture state-cbc sendmsg ip xfrm state add src 192.0.2.1 dst 192.0.2.3 proto esp \
    spi 0xc0ffee03 reqid 0x5a600002 mode tunnel flag af-unspec replay-window 32 \
    enc 'cbc(aes)' $cbc_key auth-trunc 'hmac(sha256)' $hmac_key 128 \
    encap espinudp 4500 4500 0.0.0.0
capture policy-out sendmsg ip xfrm policy update src ::/0 dst 2001:db8:5::2/128 dir out \
    priority 199808 tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 0x5a600001 mode tunnel \
    if_id 0x5a6
capture policy-fwd sendmsg ip xfrm policy update src 2001:db8:5::2/128 dst ::/0 dir fwd \
    priority 199808 tmpl src 192.0.2.2 dst 192.0.2.1 proto esp reqid 0x5a600001 mode tunnel
capture state-dump recvmsg ip xfrm state list
capture policy-dump recvmsg ip xfrm policy list
capture state-delete sendmsg ip xfrm state delete src 192.0.2.1 dst 192.0.2.3 proto esp spi 0xc0ffee03
capture policy-delete sendmsg ip xfrm policy delete src 2001:db8:5::2/128 dst ::/0 dir fwd
ls -l "$out"
