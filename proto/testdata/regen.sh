#!/bin/sh
# Regenerates the CSR, certificate and PKCS#7 fixtures used by estuary-proto's tests.
# Needs the openssl CLI (tested with OpenSSL 3.0). Private keys live in a temporary directory
# and are deleted: only public artefacts are kept.
#
#   cd proto/testdata && ./regen.sh
set -eu
cd "$(dirname "$0")"
KEYS=$(mktemp -d)
trap 'rm -rf "$KEYS"' EXIT

NAME=dev1.iot.example.test
SUBJ="/serialNumber=DEV1/CN=$NAME"

key() { # key FILE ALGO [OPTS...]
    f=$1; shift
    openssl genpkey -quiet "$@" -out "$KEYS/$f.key" 2>/dev/null || openssl genpkey "$@" -out "$KEYS/$f.key"
}
csr() { # csr OUT KEY DIGEST SUBJ [EXTRA...]
    out=$1 k=$2 dig=$3 subj=$4; shift 4
    if [ -n "$dig" ]; then set -- "-$dig" "$@"; fi
    openssl req -new -key "$KEYS/$k.key" -subj "$subj" "$@" -outform DER -out "csr/$out.der"
}
mkdir -p csr cert

key rsa1024 -algorithm RSA -pkeyopt rsa_keygen_bits:1024
key rsa2048 -algorithm RSA -pkeyopt rsa_keygen_bits:2048
key rsa3072 -algorithm RSA -pkeyopt rsa_keygen_bits:3072
key rsa4096 -algorithm RSA -pkeyopt rsa_keygen_bits:4096
key p256 -algorithm EC -pkeyopt ec_paramgen_curve:P-256
key p384 -algorithm EC -pkeyopt ec_paramgen_curve:P-384
key k256 -algorithm EC -pkeyopt ec_paramgen_curve:secp256k1
key ed25519 -algorithm ED25519

SAN="subjectAltName=DNS:$NAME"
csr rsa2048-sha256-san rsa2048 sha256 "$SUBJ" -addext "$SAN"
csr rsa2048-sha384-san rsa2048 sha384 "$SUBJ" -addext "$SAN"
csr rsa3072-sha512-san rsa3072 sha512 "$SUBJ" -addext "$SAN"
csr rsa4096-sha256-nosan rsa4096 sha256 "/CN=$NAME"
csr rsa1024-sha256-san rsa1024 sha256 "$SUBJ" -addext "$SAN"
csr p256-sha256-san p256 sha256 "$SUBJ" -addext "$SAN"
csr p256-sha384-san p256 sha384 "$SUBJ" -addext "$SAN"
csr p256-sha256-nosan p256 sha256 "/CN=$NAME"
csr p384-sha384-san p384 sha384 "$SUBJ" -addext "$SAN"
csr p384-sha256-san p384 sha256 "$SUBJ" -addext "$SAN"
csr k256-sha256-san k256 sha256 "$SUBJ" -addext "$SAN"
csr ed25519-san ed25519 "" "$SUBJ" -addext "$SAN"
csr ed25519-nosan ed25519 "" "/CN=$NAME"
csr p256-two-dns p256 sha256 "$SUBJ" -addext "subjectAltName=DNS:$NAME,DNS:other.iot.example.test"
csr p256-other-dns p256 sha256 "/CN=dev2.iot.example.test" -addext "subjectAltName=DNS:dev2.iot.example.test"
csr p256-ip-san p256 sha256 "$SUBJ" -addext "subjectAltName=DNS:$NAME,IP:127.0.0.1"
csr p256-upper-dns p256 sha256 "/CN=DEV1.IoT.Example.Test" -addext "subjectAltName=DNS:DEV1.IoT.Example.Test"
csr p256-wrong-cn p256 sha256 "/CN=someone-else" -addext "$SAN"
csr p256-empty-subject p256 sha256 "/" -addext "$SAN"

# A small chain: root CA -> leaf for $NAME, P-256 throughout.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$KEYS/ca.key"
openssl req -x509 -new -key "$KEYS/ca.key" -subj "/CN=Estuary Test Root" -days 36500 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -out cert/ca.pem
openssl req -new -key "$KEYS/p256.key" -subj "$SUBJ" -addext "$SAN" -out "$KEYS/leaf.csr"
printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\n' "$NAME" > "$KEYS/leaf.ext"
openssl x509 -req -in "$KEYS/leaf.csr" -CA cert/ca.pem -CAkey "$KEYS/ca.key" -CAcreateserial \
    -CAserial "$KEYS/ca.srl" -days 36500 -extfile "$KEYS/leaf.ext" -out cert/leaf.pem
openssl x509 -in cert/leaf.pem -outform DER -out cert/leaf.der
openssl x509 -in cert/ca.pem -outform DER -out cert/ca.der
cat cert/leaf.pem cert/ca.pem > cert/chain.pem
# OpenSSL's own certs-only PKCS#7 of the chain (leaf first).
openssl crl2pkcs7 -nocrl -certfile cert/chain.pem -outform DER -out cert/chain-openssl.p7b
# Re-enrolment CSR with a NEW key but the leaf's subject and SAN.
key p256b -algorithm EC -pkeyopt ec_paramgen_curve:P-256
csr reenroll-same p256b sha256 "$SUBJ" -addext "$SAN"
csr reenroll-new-subject p256b sha256 "/serialNumber=DEV1/CN=$NAME/O=Changed" -addext "$SAN"
echo "fixtures regenerated"
