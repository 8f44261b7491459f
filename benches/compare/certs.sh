#!/usr/bin/env bash
# Make the certificate files both servers share, in directory $1:
#   rsa.crt/rsa.key       self-signed RSA-4096, SHA-256: the "Default Cert"
#   ecdsa.crt/ecdsa.key   self-signed ECDSA P-256 companion
#   ca.crt/ca.key         a test CA that issues the two below
#   client.crt/client.key a client certificate (require + client certificate scenarios)
#   sink.crt/sink.key     the sink's certificate, name sink.localhost (outbound verify scenarios)
set -euo pipefail
dir=${1:?usage: certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
[ -s rsa.crt ] && [ -s sink.crt ] && exit 0
q() { openssl "$@" 2>/dev/null; }
q req -x509 -newkey rsa:4096 -sha256 -nodes -days 30 -keyout rsa.key -out rsa.crt \
  -subj "/CN=Default Cert" -addext "subjectAltName=DNS:localhost"
q req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -nodes -days 30 -keyout ecdsa.key -out ecdsa.crt \
  -subj "/CN=Default Cert ECDSA" -addext "subjectAltName=DNS:localhost"
q req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -nodes -days 30 -keyout ca.key -out ca.crt \
  -subj "/CN=Postern Bench CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
issue() { # name cn san eku
  q req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$3" "$4" > "$1.ext"
  q x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -sha256 -extfile "$1.ext" -out "$1.crt"
  rm -f "$1.csr" "$1.ext"
}
issue client client.localhost DNS:client.localhost clientAuth
issue sink sink.localhost DNS:sink.localhost serverAuth
chmod 600 ./*.key
