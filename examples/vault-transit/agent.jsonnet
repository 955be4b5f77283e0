// Sign with an OpenBao/Vault transit key; verify online with the same server, or offline with
// its exported public key. NOT RUN IN CI: it needs a running OpenBao or Vault and a token
// (VAULT_ADDR/BAO_ADDR and VAULT_TOKEN/BAO_TOKEN in the environment). See README.md.
//
// `bao` is the OpenBao CLI; use `vault` for HashiCorp Vault (same arguments).
{
  build: {
    signingCommands: [
      {
        id: 'transit sign',
        always: true,
        change: |||
          set -euo pipefail
          header=$(printf '%s' '{"alg":"EdDSA","typ":"JWT"}' | basenc --base64url -w0 | tr -d '=')
          input="$header.$ETCHA_PAYLOAD"
          sig=$(bao write -field=signature transit/sign/agent \
            input="$(printf '%s' "$input" | base64 -w0)" marshaling_algorithm=jws)
          printf '%s.%s' "$input" "${sig##*:}"   # vault:v1:<base64url signature>
        |||,
        onChange: ['etcha:jwt'],
      },
    ],
  },
  run: {
    // Online: ask the server. verifyKeys are not used when verifyCommands are set.
    verifyCommands: [
      {
        id: 'transit verify',
        always: true,
        change: |||
          set -euo pipefail
          input=${ETCHA_JWT%.*}
          sig=${ETCHA_JWT##*.}
          valid=$(bao write -field=valid transit/verify/agent \
            input="$(printf '%s' "$input" | base64 -w0)" marshaling_algorithm=jws \
            signature="vault:v1:$sig")
          if [ "$valid" = true ]; then printf '%s' "$ETCHA_JWT"; fi
        |||,
        onChange: ['etcha:jwt'],
      },
    ],
    // Offline alternative (drop verifyCommands): the exported public key, raw 32 bytes in
    // base64, with the ed25519public: prefix and a key id.
    // verifyKeys: ['ed25519public:<base64 from transit/export/public-key/agent>:vault'],
  },
  sources: {
    web: { allowPush: true },
  },
}
