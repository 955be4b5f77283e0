// Signing and verifying with openssl instead of keys held by the agent: build.signingCommands
// produce the JWT (the private key stays where openssl can reach it: a file here, a smartcard,
// an HSM via an engine, a KMS CLI...), run.verifyCommands decide whether a JWT is genuine.
//
// One file for both sides to keep the example short; on real hosts the `run` part lives on the
// hosts and the `build` part on the machine that signs.
local publicPem = importstr 'keys/public.pem';

{
  build: {
    signingCommands: [
      {
        id: 'openssl sign',
        always: true,
        // $ETCHA_PAYLOAD is the base64url JWT payload; the command prints header.payload.sig.
        change: |||
          set -e
          b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
          tmp=$(mktemp -d)
          trap 'rm -rf "$tmp"' EXIT
          header=$(printf '%s' '{"alg":"EdDSA","typ":"JWT"}' | b64url)
          printf '%s.%s' "$header" "$ETCHA_PAYLOAD" > "$tmp/input"
          openssl pkeyutl -sign -rawin -inkey "$KEY" -in "$tmp/input" -out "$tmp/sig"
          printf '%s.%s' "$(cat "$tmp/input")" "$(b64url < "$tmp/sig")"
        |||,
        onChange: ['etcha:jwt'],  // this command's output is the token
      },
    ],
    signingExec: { env: { KEY: 'keys/signing.pem' } },
  },
  run: {
    listenAddress: '127.0.0.1:4000',  // run.py: -x run_listenAddress=127.0.0.1:<free port>
    stateDir: 'state',
    tlsDisable: true,  // plain HTTP on loopback: this example is about signatures, not TLS
    verifyCommands: [
      {
        id: 'openssl verify',
        always: true,
        // Print the token only when openssl verifies its signature; printing nothing (or
        // failing) refuses it. verifyKeys are not used when verifyCommands are set.
        change: |||
          set -e
          unb64url() {
            s=$(printf '%%s' "$1" | tr -- '-_' '+/')
            while [ $(( ${#s} %% 4 )) -ne 0 ]; do s="$s="; done
            printf '%%s' "$s" | openssl base64 -d -A
          }
          tmp=$(mktemp -d)
          trap 'rm -rf "$tmp"' EXIT
          printf '%%s' '%s' > "$tmp/public.pem"
          printf '%%s' "${ETCHA_JWT%%.*}" > "$tmp/input"
          unb64url "${ETCHA_JWT##*.}" > "$tmp/sig"
          openssl pkeyutl -verify -rawin -pubin -inkey "$tmp/public.pem" -in "$tmp/input" \
            -sigfile "$tmp/sig" >/dev/null
          printf '%%s' "$ETCHA_JWT"
        ||| % publicPem,
        onChange: ['etcha:jwt'],
      },
    ],
  },
  sources: {
    web: { allowPush: true },
  },
}
