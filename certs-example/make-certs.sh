#!/usr/bin/env bash
# Makes the example PKI that sixgate's tests and demo use, offline, with openssl.
#
#   ecdsa/ and rsa/   a CA, the broker (SAN DNS:broker.example.net), three clients
#                     (SAN email:client@example.net, client2@..., client3@...)
#   bad/              certificates that must be refused, one reason each:
#                     rogue-*   a client certificate issued by a CA nobody trusts
#                     expired-* valid 2020-2021 only
#                     notyet-*  valid from 2099 on
#                     nobc-*    a leaf issued by an intermediate that lacks
#                               basicConstraints CA:TRUE (chain: nobc-client.pem
#                               holds the leaf followed by that intermediate)
#
# Private keys are PKCS#8 PEM. Every leaf file is the leaf only; `*-chain.pem`
# holds the leaf followed by its CA, as a daemon would send it.
#
# Usage: certs-example/make-certs.sh [OUTDIR]   (default: the directory of this script)
#
# Regenerating replaces every key and certificate: the strongSwan captures in
# proto/tests/data/strongswan/ hold the current ones, so they would have to be
# captured again (tests/lab/capture-strongswan.sh).
set -euo pipefail

out=${1:-$(cd "$(dirname "$0")" && pwd)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# openssl ca keeps a database; one per run, thrown away afterwards.
cat >"$work/ca.cnf" <<'EOF'
[ca]
default_ca = sixgate
[sixgate]
database = $ENV::SG_WORK/index.txt
new_certs_dir = $ENV::SG_WORK
serial = $ENV::SG_WORK/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
countryName = optional
organizationName = optional
commonName = supplied
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_noca]
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth, 1.3.6.1.5.5.7.3.17
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $ENV::SG_SAN
EOF
export SG_WORK=$work SG_SAN=none
: >"$work/index.txt"
echo 1000 >"$work/serial"

newkey() { # kind file
    case $1 in
    ecdsa) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$2" 2>/dev/null ;;
    rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$2" 2>/dev/null ;;
    esac
}

# sign SUBJECT KEY OUT ISSUER_CERT ISSUER_KEY EXT START END [SAN]
# START/END are openssl ca dates (YYYYMMDDHHMMSSZ); ISSUER_CERT "self" self-signs.
sign() {
    local subj=$1 key=$2 cert=$3 icert=$4 ikey=$5 ext=$6 start=$7 end=$8
    SG_SAN=${9:-none}
    [ "$SG_SAN" = none ] && SG_SAN="DNS:unused.invalid"
    export SG_SAN
    openssl req -new -config "$work/ca.cnf" -key "$key" -subj "$subj" -out "$work/req.csr"
    if [ "$icert" = self ]; then
        openssl ca -batch -notext -config "$work/ca.cnf" -selfsign -keyfile "$key" \
            -extensions "$ext" -startdate "$start" -enddate "$end" \
            -in "$work/req.csr" -out "$cert" 2>/dev/null
    else
        openssl ca -batch -notext -config "$work/ca.cnf" -cert "$icert" -keyfile "$ikey" \
            -extensions "$ext" -startdate "$start" -enddate "$end" \
            -in "$work/req.csr" -out "$cert" 2>/dev/null
    fi
}

from=20250101000000Z
until=20450101000000Z

for kind in ecdsa rsa; do
    d=$out/$kind
    mkdir -p "$d"
    newkey $kind "$d/ca.key"
    sign "/O=sixgate example/CN=sixgate example CA ($kind)" "$d/ca.key" "$d/ca.pem" self "" v3_ca $from $until
    for who in broker client client2 client3; do
        newkey $kind "$d/$who.key"
        case $who in
        broker) cn=broker.example.net san=DNS:broker.example.net ;;
        client) cn=client@example.net san=email:client@example.net ;;
        client2) cn=client2@example.net san=email:client2@example.net ;;
        client3) cn=client3@example.net san=email:client3@example.net ;;
        esac
        sign "/O=sixgate example/CN=$cn" "$d/$who.key" "$d/$who.pem" "$d/ca.pem" "$d/ca.key" v3_leaf $from $until "$san"
        cat "$d/$who.pem" "$d/ca.pem" >"$d/$who-chain.pem"
    done
done

# The refusal matrix, in both key types: each names the client identity
# client@example.net so only the one defect under test differs.
for kind in ecdsa rsa; do
    d=$out/bad/$kind
    good=$out/$kind
    mkdir -p "$d"
    newkey $kind "$d/rogue-ca.key"
    sign "/O=rogue/CN=rogue CA" "$d/rogue-ca.key" "$d/rogue-ca.pem" self "" v3_ca $from $until
    newkey $kind "$d/rogue-client.key"
    sign "/O=rogue/CN=client@example.net" "$d/rogue-client.key" "$d/rogue-client.pem" \
        "$d/rogue-ca.pem" "$d/rogue-ca.key" v3_leaf $from $until email:client@example.net

    newkey $kind "$d/expired-client.key"
    sign "/O=sixgate example/CN=client@example.net" "$d/expired-client.key" "$d/expired-client.pem" \
        "$good/ca.pem" "$good/ca.key" v3_leaf 20200101000000Z 20210101000000Z email:client@example.net

    newkey $kind "$d/notyet-client.key"
    sign "/O=sixgate example/CN=client@example.net" "$d/notyet-client.key" "$d/notyet-client.pem" \
        "$good/ca.pem" "$good/ca.key" v3_leaf 20990101000000Z 21000101000000Z email:client@example.net

    newkey $kind "$d/nobc-intermediate.key"
    sign "/O=sixgate example/CN=intermediate without CA:TRUE" "$d/nobc-intermediate.key" "$d/nobc-intermediate.pem" \
        "$good/ca.pem" "$good/ca.key" v3_noca $from $until
    newkey $kind "$d/nobc-client.key"
    sign "/O=sixgate example/CN=client@example.net" "$d/nobc-client.key" "$d/nobc-leaf.pem" \
        "$d/nobc-intermediate.pem" "$d/nobc-intermediate.key" v3_leaf $from $until email:client@example.net
    cat "$d/nobc-leaf.pem" "$d/nobc-intermediate.pem" >"$d/nobc-client.pem"
    rm "$d/nobc-leaf.pem" "$d/rogue-ca.key" "$d/nobc-intermediate.key"
done

echo "certificates written to $out"
