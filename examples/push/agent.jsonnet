// The host's config: one source, `web`, that accepts pushed patterns signed by public.key.
// run.py adds `-x run_listenAddress=127.0.0.1:<free port>`; the default is ':4000'.
{
  run: {
    listenAddress: '127.0.0.1:4000',
    stateDir: 'state',  // <stateDir>/web.jwt: the last accepted pattern (mode 0600)
    verifyKeys: [importstr 'public.key'],
    // TLS with a certificate made by openssl (run.py); without these two keys the agent makes
    // a self-signed one, and run.tlsDisable serves plain HTTP.
    tlsCertificatePath: 'tls/cert.pem',
    tlsKeyPath: 'tls/key.pem',
  },
  sources: {
    web: { allowPush: true },
    // Ad-hoc commands get their own source: a push replaces the source's pattern, so a command
    // pushed to `web` would remove web's files.
    adhoc: { allowPush: true },
  },
}
