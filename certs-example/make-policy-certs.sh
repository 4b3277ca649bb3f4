#!/usr/bin/env bash
# Makes the certificate-policy fixtures in certs-example/policy/ with openssl,
# issued by the example CAs of make-certs.sh (which this script leaves alone:
# the strongSwan captures depend on them). Every leaf names client@example.net
# (or, under the name-constrained CA, client@example.org), so that the one
# property under test is all that differs from a good client certificate.
#
#   ku-client          keyUsage without digitalSignature (keyAgreement only)
#   eku-client         extendedKeyUsage emailProtection only
#   serverauth-client  extendedKeyUsage serverAuth only: a server's, not a client's
#   ikeonly-client     extendedKeyUsage id-kp-ipsecIKE only (good)
#   pathlen-client     leaf, B, A: A (pathlen:0, under the CA) issued the CA B
#   pathlen0-client    leaf, A: the leaf directly under A (good)
#   nc-bad-client      leaf, N: N permits email:example.org only; the leaf is
#                      client@example.net
#   nc-good-client     leaf, N: client@example.org under N (good)
#   critical-client    an unknown critical extension (1.3.6.1.4.1.55555.1)
#   sha1-client        RSA, signed by the RSA CA with SHA-1
#   rsa1024-client     RSA-1024 key, signed by the RSA CA with SHA-256
#   revoked-client     listed in crl.pem / crl.der (the ECDSA CA's CRL)
#   crl.pem, crl.der   the ECDSA CA's CRL, 2025-01-01 to 2045-01-01
#   crl-stale.pem      the same CRL with nextUpdate 2025-06-01 (stale)
#   crl-rogue.pem      a CRL naming the ECDSA CA but signed by another key
#
# Usage: certs-example/make-policy-certs.sh [OUTDIR]  (default: policy/ beside it)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/policy}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

cat >"$work/ca.cnf" <<'EOF'
[ca]
default_ca = sixgate
[sixgate]
database = $ENV::SG_WORK/index.txt
new_certs_dir = $ENV::SG_WORK
serial = $ENV::SG_WORK/serial
crlnumber = $ENV::SG_WORK/crlnumber
default_md = sha256
default_crl_days = 7300
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
[ca_pathlen0]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca_plain]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca_nc]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
nameConstraints = critical, permitted;email:example.org
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
# The leaves' sections: the extensions of a good client certificate, each
# but one property the same.
leaf() { # NAME, then its keyUsage and further lines
    local name=$1
    shift
    printf '[%s]\nbasicConstraints = critical, CA:FALSE\n' "$name"
    printf '%s\n' "$@"
    printf 'subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\nsubjectAltName = $ENV::SG_SAN\n'
}
ike_ekus="extendedKeyUsage = serverAuth, clientAuth, 1.3.6.1.5.5.7.3.17"
signing="keyUsage = critical, digitalSignature"
{
    leaf good "$signing" "$ike_ekus"
    leaf ku "keyUsage = critical, keyAgreement"
    leaf eku "$signing" "extendedKeyUsage = emailProtection"
    leaf serverauth "$signing" "extendedKeyUsage = serverAuth"
    leaf ikeonly "$signing" "extendedKeyUsage = 1.3.6.1.5.5.7.3.17"
    leaf critical "$signing" "$ike_ekus" "1.3.6.1.4.1.55555.1 = critical, DER:05:00"
} >>"$work/ca.cnf"
export SG_WORK=$work SG_SAN="email:client@example.net"
: >"$work/index.txt"
echo 5000 >"$work/serial"
echo 01 >"$work/crlnumber"

from=20250101000000Z
until=20450101000000Z

newkey() { # kind file
    case $1 in
    ecdsa) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$2" 2>/dev/null ;;
    rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$2" 2>/dev/null ;;
    rsa1024) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$2" 2>/dev/null ;;
    esac
}

# issue NAME KIND ISSUER_CERT ISSUER_KEY EXTENSIONS [MD]: a key and a
# certificate for CN=client@example.net (or what SG_SAN says), in $out.
issue() {
    local name=$1 kind=$2 icert=$3 ikey=$4 ext=$5 md=${6:-sha256}
    local cn=${SG_SAN#email:}
    case $ext in ca_*) cn="sixgate example intermediate ($name)" ;; esac
    newkey "$kind" "$out/$name.key"
    openssl req -new -config "$work/ca.cnf" -key "$out/$name.key" \
        -subj "/O=sixgate example/CN=$cn" -out "$work/req.csr"
    openssl ca -batch -notext -config "$work/ca.cnf" -cert "$icert" -keyfile "$ikey" \
        -extensions "$ext" -md "$md" -startdate $from -enddate $until \
        -in "$work/req.csr" -out "$out/$name.pem" 2>/dev/null
}

ecdsa=$here/ecdsa
rsa=$here/rsa

issue ku-client ecdsa "$ecdsa/ca.pem" "$ecdsa/ca.key" ku
issue eku-client ecdsa "$ecdsa/ca.pem" "$ecdsa/ca.key" eku
issue serverauth-client ecdsa "$ecdsa/ca.pem" "$ecdsa/ca.key" serverauth
issue ikeonly-client ecdsa "$ecdsa/ca.pem" "$ecdsa/ca.key" ikeonly
issue critical-client ecdsa "$ecdsa/ca.pem" "$ecdsa/ca.key" critical
issue sha1-client rsa "$rsa/ca.pem" "$rsa/ca.key" good sha1
issue rsa1024-client rsa1024 "$rsa/ca.pem" "$rsa/ca.key" good
issue revoked-client ecdsa "$ecdsa/ca.pem" "$ecdsa/ca.key" good

# pathLenConstraint: A may issue leaves only; B under A breaks that.
issue pathlen-a ecdsa "$ecdsa/ca.pem" "$ecdsa/ca.key" ca_pathlen0
issue pathlen-b ecdsa "$out/pathlen-a.pem" "$out/pathlen-a.key" ca_plain
issue pathlen-leaf ecdsa "$out/pathlen-b.pem" "$out/pathlen-b.key" good
cat "$out/pathlen-leaf.pem" "$out/pathlen-b.pem" "$out/pathlen-a.pem" >"$out/pathlen-client.pem"
mv "$out/pathlen-leaf.key" "$out/pathlen-client.key"
issue pathlen0-leaf ecdsa "$out/pathlen-a.pem" "$out/pathlen-a.key" good
cat "$out/pathlen0-leaf.pem" "$out/pathlen-a.pem" >"$out/pathlen0-client.pem"
mv "$out/pathlen0-leaf.key" "$out/pathlen0-client.key"

# Name constraints: N permits rfc822 names at example.org only.
issue nc ecdsa "$ecdsa/ca.pem" "$ecdsa/ca.key" ca_nc
issue nc-bad-leaf ecdsa "$out/nc.pem" "$out/nc.key" good
cat "$out/nc-bad-leaf.pem" "$out/nc.pem" >"$out/nc-bad-client.pem"
mv "$out/nc-bad-leaf.key" "$out/nc-bad-client.key"
SG_SAN="email:client@example.org" issue nc-good-leaf ecdsa "$out/nc.pem" "$out/nc.key" good
cat "$out/nc-good-leaf.pem" "$out/nc.pem" >"$out/nc-good-client.pem"
mv "$out/nc-good-leaf.key" "$out/nc-good-client.key"

# The CRL: revoked-client is on it. The database holds every certificate
# this run issued under either CA; `-revoke` marks one, and `-gencrl` lists
# the marked ones issued by the CA it runs as.
openssl ca -config "$work/ca.cnf" -cert "$ecdsa/ca.pem" -keyfile "$ecdsa/ca.key" \
    -revoke "$out/revoked-client.pem" -crl_reason keyCompromise 2>/dev/null
openssl ca -batch -config "$work/ca.cnf" -cert "$ecdsa/ca.pem" -keyfile "$ecdsa/ca.key" \
    -gencrl -crl_lastupdate $from -crl_nextupdate $until -out "$out/crl.pem" 2>/dev/null
openssl crl -in "$out/crl.pem" -outform DER -out "$out/crl.der"
openssl ca -batch -config "$work/ca.cnf" -cert "$ecdsa/ca.pem" -keyfile "$ecdsa/ca.key" \
    -gencrl -crl_lastupdate $from -crl_nextupdate 20250601000000Z -out "$out/crl-stale.pem" 2>/dev/null
# The same issuer name, another key: a self-signed look-alike of the CA.
newkey ecdsa "$work/rogue.key"
openssl req -new -x509 -config "$work/ca.cnf" -key "$work/rogue.key" \
    -subj "$(openssl x509 -in "$ecdsa/ca.pem" -noout -subject -nameopt compat | sed 's/^subject=//')" \
    -days 7300 -out "$work/rogue.pem"
openssl ca -batch -config "$work/ca.cnf" -cert "$work/rogue.pem" -keyfile "$work/rogue.key" \
    -gencrl -crl_lastupdate $from -crl_nextupdate $until -out "$out/crl-rogue.pem" 2>/dev/null

rm -f "$out"/*-leaf.pem "$out/pathlen-a.key" "$out/pathlen-b.key" "$out/nc.key"
echo "policy certificates written to $out"
