#!/usr/bin/env bash
# Captures real IKEv2 exchanges between two strongSwan (charon) instances in
# private network namespaces, together with the IKE keys charon derived, as test
# data for sixgate's parser/crypto tests.
#
#   client  ns sgcap-c-PID  192.0.2.2  initiator, id client@example.net, vips = ::
#   broker  ns sgcap-b-PID  192.0.2.1  responder, id broker.example.net,
#                                      pool 2001:db8:100::100/120
#
# Both charons use kernel-libipsec (userspace ESP), which makes them fake NAT-D
# hashes so that IKE floats to UDP 4500 after IKE_SA_INIT.
#
# For each case, OUTDIR/CASE/ gets:
#   NN-{i2r,r2i}-{500,4500}.bin   IKE_SA_INIT / IKE_AUTH UDP payloads in capture
#                                 order (non-ESP marker stripped on port 4500)
#   keys.txt                      SKEYSEED, SK_* (from the initiator's log, checked
#                                 against the responder's and against prf+),
#                                 negotiated algorithms, nonces, SPIs
#   manifest.txt                  one line per .bin, plus the proposals used
#   charon-initiator.log / charon-responder.log   IKE part of the filelogs
#   capture.pcap is NOT kept (everything relevant is in the .bin files).
#
# Usage: tests/lab/capture-strongswan.sh OUTDIR [CASE...]
#   CASE: default-ecdsa gcm-rsa cbc-modp-rsa frag-ecdsa (default: these four),
#         frag-gcm-rsa (optional extra: SKF fragments with AES-GCM)
#   env:  CERTS (default: <repo>/certs-example), CHARON (charon binary),
#         KEEP_WORK=1 keeps the temporary work dir (configs, full logs, pcap)
# Needs root, iproute2, tcpdump, unshare, python3 (stdlib only), strongswan-charon,
# strongswan-swanctl, libstrongswan-standard-plugins, libcharon-extra-plugins.
# Never talks to anything outside the two namespaces it creates.
set -euo pipefail

if [ $# -lt 1 ]; then
	echo "usage: $0 OUTDIR [CASE...]" >&2
	exit 2
fi
OUT=$1
shift
ALL_CASES=(default-ecdsa gcm-rsa cbc-modp-rsa frag-ecdsa)
if [ $# -gt 0 ]; then CASES=("$@"); else CASES=("${ALL_CASES[@]}"); fi

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
CERTS=${CERTS:-$REPO/certs-example}
if [ -z "${CHARON:-}" ]; then
	for c in /usr/lib/ipsec/charon /usr/libexec/ipsec/charon /usr/lib/strongswan/charon \
		/usr/libexec/strongswan/charon "$(command -v charon || true)"; do
		if [ -n "$c" ] && [ -x "$c" ]; then CHARON=$c; break; fi
	done
fi
[ -n "${CHARON:-}" ] || { echo "charon not found (set CHARON=)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
for t in ip tcpdump swanctl unshare python3; do
	command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

SS_VERSION=$("$CHARON" --version 2>/dev/null | sed 's/^Linux //' || true)
SS_VERSION=${SS_VERSION:-strongSwan}
TAG=$$
NS_C=sgcap-c-$TAG
NS_B=sgcap-b-$TAG
VETH_C=sgc$TAG
VETH_B=sgb$TAG
IP_C=192.0.2.2
IP_B=192.0.2.1
WORK=$(mktemp -d /tmp/sgcap.XXXXXX)
chmod 700 "$WORK"
PIDS=()     # charon and tcpdump pids of the running case
NETNS=()    # namespaces of the running case

log() { echo "[capture] $*" >&2; }

stop_pid() { # pid [signal]
	local pid=$1 sig=${2:-TERM} i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -"$sig" "$pid" 2>/dev/null || true
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

teardown() {
	local p n
	for p in "${PIDS[@]}"; do stop_pid "$p"; done
	PIDS=()
	for n in "${NETNS[@]}"; do
		# anything still inside (should be nothing): kill by pid
		for p in $(ip netns pids "$n" 2>/dev/null); do stop_pid "$p" KILL; done
		ip netns del "$n" 2>/dev/null || true
	done
	NETNS=()
}

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM HUP
	teardown
	if [ -n "${KEEP_WORK:-}" ]; then echo "[capture] work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

setup_netns() {
	ip netns add "$NS_C"; NETNS+=("$NS_C")
	ip netns add "$NS_B"; NETNS+=("$NS_B")
	ip link add "$VETH_C" type veth peer name "$VETH_B"
	ip link set "$VETH_C" netns "$NS_C"
	ip link set "$VETH_B" netns "$NS_B"
	local ns dev addr
	for ns in "$NS_C" "$NS_B"; do
		ip -n "$ns" link set lo up
		ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
			net.ipv6.conf.default.accept_dad=0 >/dev/null 2>&1 || true
	done
	ip -n "$NS_C" addr add "$IP_C/24" dev "$VETH_C"
	ip -n "$NS_B" addr add "$IP_B/24" dev "$VETH_B"
	ip -n "$NS_C" link set "$VETH_C" mtu 9000
	ip -n "$NS_B" link set "$VETH_B" mtu 9000
	ip -n "$NS_C" link set "$VETH_C" up
	ip -n "$NS_B" link set "$VETH_B" up
}

# write_strongswan_conf DIR FRAGMENT_SIZE
write_strongswan_conf() {
	local d=$1 frag=$2
	cat >"$d/strongswan.conf" <<EOF
charon {
	load_modular = no
	load = random nonce aes sha1 sha2 hmac gcm kdf pem pkcs1 pkcs8 x509 pubkey constraints openssl kernel-libipsec kernel-netlink socket-default vici
	install_routes = no
	retransmit_tries = 3
	fragment_size = $frag
	plugins {
		vici {
			socket = unix://$d/charon.vici
		}
	}
	filelog {
		ike {
			path = $d/charon.log
			append = no
			flush_line = yes
			ike_name = yes
			time_format = %H:%M:%S
			default = 1
			ike = 4
			enc = 2
			cfg = 2
		}
	}
	syslog {
		daemon {
			default = -1
		}
	}
}
swanctl {
	load = random nonce openssl pem pkcs1 pkcs8 x509
}
EOF
}

# write_swanctl ROLE DIR ALG PROPOSALS ESP_PROPOSALS FRAGMENTATION
write_swanctl() {
	local role=$1 d=$2 alg=$3 props=$4 esp=$5 frag=$6
	mkdir -p "$d/swanctl/x509" "$d/swanctl/x509ca" "$d/swanctl/private"
	cp "$CERTS/$alg/ca.pem" "$d/swanctl/x509ca/ca.pem"
	cp "$CERTS/$alg/$role.pem" "$d/swanctl/x509/$role.pem"
	install -m 600 "$CERTS/$alg/$role.key" "$d/swanctl/private/$role.key"
	if [ "$role" = client ]; then
		cat >"$d/swanctl/swanctl.conf" <<EOF
connections {
	client {
		version = 2
		local_addrs = $IP_C
		remote_addrs = $IP_B
		proposals = $props
		fragmentation = $frag
		vips = ::
		send_cert = always
		local {
			auth = pubkey
			certs = client.pem
			id = client@example.net
		}
		remote {
			auth = pubkey
			id = broker.example.net
		}
		children {
			net {
				local_ts = dynamic
				remote_ts = ::/0
				esp_proposals = $esp
			}
		}
	}
}
EOF
	else
		cat >"$d/swanctl/swanctl.conf" <<EOF
connections {
	broker {
		version = 2
		local_addrs = $IP_B
		proposals = $props
		fragmentation = $frag
		pools = v6
		send_cert = always
		local {
			auth = pubkey
			certs = broker.pem
			id = broker.example.net
		}
		remote {
			auth = pubkey
			id = client@example.net
		}
		children {
			net {
				local_ts = ::/0
				remote_ts = dynamic
				esp_proposals = $esp
			}
		}
	}
}
pools {
	v6 {
		addrs = 2001:db8:100::100/120
	}
}
EOF
	fi
}

# start_charon NS DIR  -> appends pid to PIDS
start_charon() {
	local ns=$1 d=$2 i
	# ip netns exec and unshare both exec (no fork), and sh execs charon, so
	# $! is charon's own pid.
	ip netns exec "$ns" unshare -m sh -c \
		'mount -t tmpfs tmpfs /run && exec env STRONGSWAN_CONF="$1" "$2"' \
		sh "$d/strongswan.conf" "$CHARON" >"$d/charon.stdout" 2>&1 &
	PIDS+=($!)
	for i in $(seq 100); do
		[ -S "$d/charon.vici" ] && return 0
		kill -0 "${PIDS[-1]}" 2>/dev/null || break
		sleep 0.1
	done
	echo "charon in $ns did not come up:" >&2
	cat "$d/charon.stdout" "$d/charon.log" >&2 2>/dev/null || true
	return 1
}

swanctl_in() { # DIR args...
	local d=$1; shift
	STRONGSWAN_CONF="$d/strongswan.conf" SWANCTL_DIR="$d/swanctl" \
		swanctl "$@" --uri "unix://$d/charon.vici"
}

run_case() {
	local name=$1 alg props esp frag fragsize
	case $name in
	# a-c keep strongSwan's default fragmentation = yes, but with a fragment_size
	# above the IKE_AUTH size (the veth MTU is 9000), so that their IKE_AUTH
	# messages travel unfragmented in one SK payload (with the default 1280 the
	# RSA ones would be split). frag-ecdsa is the SKF case; frag-gcm-rsa (not run
	# by default) gives SKF fragments under AEAD.
	default-ecdsa) alg=ecdsa props=default esp=default frag=yes fragsize=8000 ;;
	gcm-rsa) alg=rsa props=aes256gcm16-prfsha384-ecp384 esp=aes256gcm16 frag=yes fragsize=8000 ;;
	cbc-modp-rsa) alg=rsa props=aes256-sha256-modp2048 esp=aes256-sha256 frag=yes fragsize=8000 ;;
	frag-ecdsa) alg=ecdsa props=default esp=default frag=force fragsize=500 ;;
	frag-gcm-rsa) alg=rsa props=aes256gcm16-prfsha384-ecp384 esp=aes256gcm16 frag=force fragsize=500 ;;
	*) echo "unknown case $name" >&2; return 1 ;;
	esac
	log "case $name: $alg certs, proposals=$props esp_proposals=$esp fragmentation=$frag fragment_size=$fragsize"
	local w=$WORK/$name c b
	c=$w/initiator
	b=$w/responder
	mkdir -p "$c" "$b"
	write_strongswan_conf "$c" "$fragsize"
	write_strongswan_conf "$b" "$fragsize"
	write_swanctl client "$c" "$alg" "$props" "$esp" "$frag"
	write_swanctl broker "$b" "$alg" "$props" "$esp" "$frag"

	setup_netns
	# capture on the client's veth
	ip netns exec "$NS_C" tcpdump -i "$VETH_C" -n -U --immediate-mode -s 0 -Z root -w "$w/capture.pcap" \
		'udp port 500 or udp port 4500' >"$w/tcpdump.log" 2>&1 &
	local tcpdump_pid=$!
	PIDS+=("$tcpdump_pid")
	local i
	for i in $(seq 100); do
		grep -q 'listening on' "$w/tcpdump.log" 2>/dev/null && break
		kill -0 "$tcpdump_pid" 2>/dev/null || { cat "$w/tcpdump.log" >&2; return 1; }
		sleep 0.1
	done

	start_charon "$NS_B" "$b"
	start_charon "$NS_C" "$c"
	swanctl_in "$b" --load-all --file "$b/swanctl/swanctl.conf" >"$b/load.log" 2>&1 ||
		{ cat "$b/load.log" >&2; return 1; }
	swanctl_in "$c" --load-all --file "$c/swanctl/swanctl.conf" >"$c/load.log" 2>&1 ||
		{ cat "$c/load.log" >&2; return 1; }
	if ! swanctl_in "$c" --initiate --child net --timeout 30 >"$c/initiate.log" 2>&1; then
		cat "$c/initiate.log" >&2
		return 1
	fi
	# the SA is up (swanctl --initiate returns once the CHILD_SA is established)
	sleep 1
	stop_pid "$tcpdump_pid" INT
	swanctl_in "$c" --list-sas >"$c/list-sas.log" 2>&1 || true
	swanctl_in "$b" --list-sas >"$b/list-sas.log" 2>&1 || true
	teardown

	local dest=$OUT/$name
	rm -rf "$dest"
	mkdir -p "$dest"
	python3 "$WORK/extract.py" --pcap "$w/capture.pcap" --out "$dest" \
		--ilog "$c/charon.log" --rlog "$b/charon.log" \
		--case "$name" --initiator "$IP_C" \
		--proposals "$props" --esp-proposals "$esp" --fragmentation "$frag" \
		--fragment-size "$fragsize" --certs "$alg" --version "$SS_VERSION"
}

cat >"$WORK/extract.py" <<'PYEOF'
import argparse, hashlib, hmac, os, re, struct, sys

EXCH = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL"}

def read_pcap(path):
    data = open(path, "rb").read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        sys.exit("not a pcap file: %s" % path)
    linktype = struct.unpack(e + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        _, _, incl, orig = struct.unpack(e + "IIII", data[off:off + 16])
        off += 16
        pkt = data[off:off + incl]
        off += incl
        if incl != orig:
            sys.exit("truncated packet in capture")
        yield linktype, pkt

def udp_of(linktype, pkt):
    if linktype == 1:  # ethernet
        etype = struct.unpack("!H", pkt[12:14])[0]
        ip = pkt[14:]
        while etype == 0x8100:
            etype = struct.unpack("!H", ip[2:4])[0]
            ip = ip[4:]
    elif linktype == 113:  # linux cooked
        etype = struct.unpack("!H", pkt[14:16])[0]
        ip = pkt[16:]
    elif linktype in (101, 12):  # raw
        ip = pkt
        etype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    else:
        sys.exit("unsupported linktype %d" % linktype)
    if etype != 0x0800:
        return None
    ihl = (ip[0] & 15) * 4
    if ip[9] != 17:
        return None
    if struct.unpack("!H", ip[6:8])[0] & 0x3FFF:
        sys.exit("IP fragment in capture; extraction does not reassemble")
    total = struct.unpack("!H", ip[2:4])[0]
    ip = ip[:total]
    src = ".".join(str(b) for b in ip[12:16])
    dst = ".".join(str(b) for b in ip[16:20])
    udp = ip[ihl:]
    sport, dport, ulen = struct.unpack("!HHH", udp[:6])
    return src, dst, sport, dport, udp[8:ulen]

def payload_chain(msg):
    """yields (type, body) of the payloads following the IKE header (unencrypted)"""
    nxt = msg[16]
    off = 28
    while nxt != 0 and off + 4 <= len(msg):
        plen = struct.unpack("!H", msg[off + 2:off + 4])[0]
        yield nxt, msg[off + 4:off + plen]
        if nxt in (46, 53):  # SK / SKF: rest is encrypted
            return
        nxt = msg[off]
        off += plen

def parse_dumps(path):
    """charon %B hex dumps: {label: [bytes, ...]} in log order"""
    head = re.compile(r"\] (?:<[^>]*> )?(.*?) => (\d+) bytes @ (?:0x)?[0-9a-fA-F]+\s*$")
    line_re = re.compile(r"\] (?:<[^>]*> )?\s*(\d+): ((?:[0-9A-F]{2} )*[0-9A-F]{2})")
    out = {}
    cur = None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        m = head.search(line)
        if m:
            cur = [m.group(1), int(m.group(2)), bytearray()]
            out.setdefault(cur[0], []).append(cur)
            if cur[1] == 0:
                cur = None
            continue
        if cur is not None:
            m = line_re.search(line)
            if m and int(m.group(1)) == len(cur[2]):
                cur[2] += bytes.fromhex(m.group(2).replace(" ", ""))[: cur[1] - len(cur[2])]
                if len(cur[2]) >= cur[1]:
                    cur = None
                continue
            cur = None
    return {k: [bytes(v[2]) for v in vs if len(v[2]) == v[1]] for k, vs in out.items()}

def selected(path, proto):
    res = []
    for line in open(path, errors="replace"):
        m = re.search(r"selected proposal: (%s:\S+)" % proto, line)
        if m:
            res.append(m.group(1))
    return res

def classify(prop):
    toks = prop.split(":", 1)[1].split("/")
    r = {"encr": [], "integ": [], "prf": [], "dh": [], "other": []}
    for t in toks:
        if t.startswith("PRF_"):
            r["prf"].append(t)
        elif t.startswith(("HMAC_", "AES_XCBC", "AES_CMAC")):
            r["integ"].append(t)
        elif t.startswith(("ECP_", "MODP_", "CURVE_", "NO_EXT_SEQ", "EXT_SEQ", "ECP", "NO_DH")) \
                or t.startswith("KE") or t.startswith("ML_KEM"):
            if "SEQ" in t:
                r["other"].append(t)
            else:
                r["dh"].append(t)
        else:
            r["encr"].append(t)
    return {k: "/".join(v) if v else "none" for k, v in r.items()}

PRF_HASH = {"PRF_HMAC_SHA1": hashlib.sha1, "PRF_HMAC_SHA2_256": hashlib.sha256,
            "PRF_HMAC_SHA2_384": hashlib.sha384, "PRF_HMAC_SHA2_512": hashlib.sha512,
            "PRF_HMAC_MD5": hashlib.md5}

def prf_plus(h, key, seed, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(key, t + seed + bytes([i]), h).digest()
        out += t
        i += 1
    return out[:n]

SECRET_LABELS = re.compile(
    r"shared Diffie Hellman secret|DH secret|encryption (initiator|responder) key|"
    r"integrity (initiator|responder) key|prf\(secret, keypad\)|PPK|keypad|private|"
    r"shared secret|secret =>", re.I)
KEEP_LABELS = re.compile(r"^(SKEYSEED|Sk_(d|ai|ar|ei|er|pi|pr) secret)$")

def trim_log(src, dst, limit=200 * 1024):
    lines = open(src, errors="replace").read().splitlines(True)
    start = None
    for i, l in enumerate(lines):
        if re.search(r"initiating IKE_SA|received packet: from", l):
            start = i
            break
    end = None
    for i, l in enumerate(lines):
        if re.search(r"CHILD_SA \S+ established", l):
            end = i
    if start is None or end is None:
        sys.exit("cannot find the IKE part of %s" % src)
    head = re.compile(r"\] (?:<[^>]*> )?(.*?) => (\d+) bytes @")
    dump = re.compile(r"\] (?:<[^>]*> )?\s*\d+: [0-9A-F]{2}")
    out, dropping, dropped = [], False, 0
    rule = re.compile(r"\[ENC\] (?:<[^>]*> )?\s+(parsing|generating) rule \d+ ")
    out.append("# %s, trimmed by capture-strongswan.sh: only the IKE_SA_INIT/IKE_AUTH part; "
               "the per-field '[ENC] parsing/generating rule N' lines (enc=2) and the DH shared "
               "secret dumps removed\n" % os.path.basename(dst))
    for l in lines[start:end + 1]:
        if rule.search(l):
            continue
        m = head.search(l)
        if m:
            label = m.group(1)
            dropping = bool(SECRET_LABELS.search(label)) and not KEEP_LABELS.match(label)
            if dropping:
                dropped += 1
                out.append(re.sub(r" => \d+ bytes @ .*", " => (removed from this log)", l))
                continue
        elif dropping and dump.search(l):
            continue
        else:
            dropping = False
        out.append(l)
    text = "".join(out)
    if re.search(r"PRIVATE KEY", text):
        sys.exit("private key text in %s" % src)
    if len(text.encode()) > limit:
        sys.exit("%s still larger than %d bytes after trimming" % (dst, limit))
    open(dst, "w").write(text)
    return dropped

def main():
    ap = argparse.ArgumentParser()
    for a in ("pcap", "out", "ilog", "rlog", "case", "initiator", "proposals",
              "esp-proposals", "fragmentation", "fragment-size", "certs", "version"):
        ap.add_argument("--" + a, required=True)
    a = ap.parse_args()

    kept, skipped = [], {}
    for lt, pkt in read_pcap(a.pcap):
        u = udp_of(lt, pkt)
        if u is None:
            continue
        src, dst, sport, dport, data = u
        i2r = src == a.initiator
        port = dport if i2r else sport
        if sport == 4500 or dport == 4500:
            if len(data) == 1 and data == b"\xff":
                skipped["NAT-T keepalive"] = skipped.get("NAT-T keepalive", 0) + 1
                continue
            if data[:4] != b"\0\0\0\0":
                skipped["ESP"] = skipped.get("ESP", 0) + 1
                continue
            data = data[4:]
        if len(data) < 28:
            skipped["short"] = skipped.get("short", 0) + 1
            continue
        ex = data[18]
        if ex not in (34, 35):
            k = EXCH.get(ex, "exchange %d" % ex)
            skipped[k] = skipped.get(k, 0) + 1
            continue
        if struct.unpack("!I", data[24:28])[0] != len(data):
            sys.exit("IKE length mismatch in packet %d" % (len(kept) + 1))
        kept.append((i2r, port, data))

    if not kept:
        sys.exit("no IKE_SA_INIT/IKE_AUTH messages in the capture")
    os.makedirs(a.out, exist_ok=True)
    man = []
    man.append("# %s capture, case %s" % (a.version, a.case))
    man.append("# captured on the initiator's veth; initiator 192.0.2.2 (client@example.net), "
               "responder 192.0.2.1 (broker.example.net)")
    man.append("# swanctl.conf (both sides): proposals = %s; esp_proposals = %s; fragmentation = %s"
               % (a.proposals, a.esp_proposals, a.fragmentation))
    man.append("# strongswan.conf: charon.fragment_size = %s; certificates: %s (certs-example/%s)"
               % (a.fragment_size, a.certs, a.certs))
    man.append("# .bin = UDP payload as on the wire, except that on port 4500 the 4-byte "
               "non-ESP marker (00000000) in front of the IKE message has been stripped;")
    man.append("# every .bin therefore starts with the IKE header. Only IKE_SA_INIT and IKE_AUTH "
               "messages are kept (ESP and later exchanges dropped).")
    man.append("# columns: file direction port exchange msgid flags payload [fragment n/total] length")
    nonce = {}
    spi_i = spi_r = None
    nskf = 0
    for n, (i2r, port, data) in enumerate(kept, 1):
        d = "i2r" if i2r else "r2i"
        fn = "%02d-%s-%d.bin" % (n, d, port)
        open(os.path.join(a.out, fn), "wb").write(data)
        ex = EXCH[data[18]]
        flags = data[19]
        fl = []
        if flags & 0x08: fl.append("I")
        if flags & 0x20: fl.append("R")
        msgid = struct.unpack("!I", data[20:24])[0]
        kind, extra = "none", ""
        for t, body in payload_chain(data):
            if t == 46:
                kind = "SK(46)"
            elif t == 53:
                kind = "SKF(53)"
                fno, ftot = struct.unpack("!HH", body[:4])
                extra = " fragment %d/%d" % (fno, ftot)
                nskf += 1
            elif t == 40 and data[18] == 34:
                nonce["i" if i2r else "r"] = body
        if data[18] == 34:
            spi_i = data[0:8]
            if not i2r:
                spi_r = data[8:16]
        man.append("%s %s %d %s msgid=%d flags=%s payload=%s%s len=%d"
                   % (fn, d, port, ex, msgid, "".join(fl) or "-", kind, extra, len(data)))
    open(os.path.join(a.out, "manifest.txt"), "w").write("\n".join(man) + "\n")

    names = [("skeyseed", "SKEYSEED"), ("sk_d", "Sk_d secret"), ("sk_ai", "Sk_ai secret"),
             ("sk_ar", "Sk_ar secret"), ("sk_ei", "Sk_ei secret"), ("sk_er", "Sk_er secret"),
             ("sk_pi", "Sk_pi secret"), ("sk_pr", "Sk_pr secret")]
    idump, rdump = parse_dumps(a.ilog), parse_dumps(a.rlog)
    iprop = selected(a.ilog, "IKE")
    rprop = selected(a.rlog, "IKE")
    eprop = selected(a.ilog, "ESP") or selected(a.rlog, "ESP")
    if not iprop:
        sys.exit("no 'selected proposal: IKE:' in the initiator log")
    if rprop and rprop[0] != iprop[0]:
        sys.exit("initiator and responder selected different proposals: %s / %s" % (iprop[0], rprop[0]))
    alg = classify(iprop[0])
    aead = alg["integ"] == "none"
    keys = {}
    for short, label in names:
        iv = idump.get(label, [])
        rv = rdump.get(label, [])
        if not iv:
            if aead and short in ("sk_ai", "sk_ar"):
                keys[short] = b""
                continue
            sys.exit("initiator log lacks %s" % label)
        if len(iv) != 1:
            sys.exit("initiator log has %d %s dumps (expected 1)" % (len(iv), label))
        if rv != iv:
            sys.exit("%s differs between initiator and responder logs" % label)
        keys[short] = iv[0]

    check = "not checked (PRF %s not implemented in extract.py)" % alg["prf"]
    h = PRF_HASH.get(alg["prf"])
    if h and "i" in nonce and "r" in nonce and spi_i and spi_r:
        cat = b"".join(keys[s] for s, _ in names[1:])
        exp = prf_plus(h, keys["skeyseed"], nonce["i"] + nonce["r"] + spi_i + spi_r, len(cat))
        if exp != cat:
            sys.exit("prf+(SKEYSEED, Ni|Nr|SPIi|SPIr) does not reproduce the logged SK_* keys")
        check = "ok: prf+(SKEYSEED, Ni|Nr|SPIi|SPIr) = SK_d|SK_ai|SK_ar|SK_ei|SK_er|SK_pi|SK_pr"

    kt = []
    kt.append("# IKE keys logged by charon (strongSwan) at ike=4 (initiator log; identical in the responder log)")
    kt.append("# algorithms as strongSwan names them; selected proposal %s" % iprop[0])
    if aead:
        kt.append("# AEAD: no integrity keys (sk_ai/sk_ar empty); sk_ei/sk_er include the 4-byte GCM salt at the end")
    kt.append("# nonce_i/nonce_r/spi_i/spi_r taken from the IKE_SA_INIT messages in the capture")
    kt.append("# key derivation check: " + check)
    kt.append("prf = %s" % alg["prf"])
    kt.append("integ = %s" % alg["integ"])
    kt.append("encr = %s" % alg["encr"])
    kt.append("dh = %s" % alg["dh"])
    if eprop:
        kt.append("esp = %s" % eprop[0])
    for s, _ in names:
        kt.append("%s = %s" % (s, keys[s].hex()))
    if "i" in nonce:
        kt.append("nonce_i = %s" % nonce["i"].hex())
    if "r" in nonce:
        kt.append("nonce_r = %s" % nonce["r"].hex())
    if spi_i:
        kt.append("spi_i = %s" % spi_i.hex())
    if spi_r:
        kt.append("spi_r = %s" % spi_r.hex())
    open(os.path.join(a.out, "keys.txt"), "w").write("\n".join(kt) + "\n")

    di = trim_log(a.ilog, os.path.join(a.out, "charon-initiator.log"))
    dr = trim_log(a.rlog, os.path.join(a.out, "charon-responder.log"))
    print("[capture] %s: %d messages (%d SKF fragments), skipped %s; IKE %s; ESP %s; %s; "
          "removed %d/%d secret dumps from logs"
          % (a.case, len(kept), nskf, skipped or "nothing", iprop[0],
             eprop[0] if eprop else "?", check, di, dr), file=sys.stderr)

main()
PYEOF

mkdir -p "$OUT"
for name in "${CASES[@]}"; do
	run_case "$name"
done
log "done: ${CASES[*]} -> $OUT"
