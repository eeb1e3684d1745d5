#!/bin/sh
# Regenerates the committed seed corpus under fuzz/seeds/<target>/.
# - cms_signed: voucher requests signed with openssl as BRSKI does (RFC 8995 §3.2), with keys made
#   here in a temporary directory and deleted (only the signed messages are kept);
# - everything else: `smoke --write-seeds` (fuzz/src/generate.rs), which builds messages with
#   estuary-proto's own encoders, RFC examples, and copies of proto/testdata fixtures.
# Needs the openssl CLI (tested with OpenSSL 3.0).
#
#   fuzz/seeds/regen.sh
set -eu
cd "$(dirname "$0")"
KEYS=$(mktemp -d)
trap 'rm -rf "$KEYS"' EXIT
mkdir -p cms_signed

VR='{"ietf-voucher-request:voucher":{"assertion":"proximity","nonce":"eDs++/FuDHGUnRxN3E14CQ==","serial-number":"JADA123456789","created-on":"2017-09-01T00:00:00.000Z","proximity-registrar-cert":"MAA="}}'
printf '%s' "$VR" > "$KEYS/vr.json"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$KEYS/ca.key" 2>/dev/null
openssl req -x509 -new -key "$KEYS/ca.key" -subj "/CN=Fuzz Seed CA" -days 36500 \
    -addext "basicConstraints=critical,CA:TRUE" -out "$KEYS/ca.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$KEYS/p256.key" 2>/dev/null
openssl req -new -key "$KEYS/p256.key" -subj "/serialNumber=JADA123456789/CN=pledge" -out "$KEYS/p256.csr"
openssl x509 -req -in "$KEYS/p256.csr" -CA "$KEYS/ca.pem" -CAkey "$KEYS/ca.key" -days 36500 \
    -extfile /dev/stdin -out "$KEYS/p256.pem" <<'EXT'
subjectKeyIdentifier=hash
EXT
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$KEYS/rsa.key" 2>/dev/null
openssl req -x509 -new -key "$KEYS/rsa.key" -subj "/CN=rsa signer" -days 36500 -out "$KEYS/rsa.pem"

sign() { # sign OUT CERT KEY [OPTS...]
    out=$1 cert=$2 key=$3; shift 3
    openssl cms -sign -binary -nodetach -econtent_type 1.2.840.113549.1.9.16.1.40 \
        -in "$KEYS/vr.json" -signer "$KEYS/$cert.pem" -inkey "$KEYS/$key.key" \
        -outform DER -out "cms_signed/$out.der" "$@"
}
sign p256-sha256 p256 p256 -nosmimecap
sign p256-chain p256 p256 -nosmimecap -certfile "$KEYS/ca.pem"
sign p256-sha384-keyid p256 p256 -md sha384 -keyid
sign p256-noattr p256 p256 -noattr
sign rsa-sha256 rsa rsa -nosmimecap

cargo run --quiet --release --manifest-path ../Cargo.toml --bin smoke -- --write-seeds
