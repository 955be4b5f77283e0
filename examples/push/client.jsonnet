// The laptop's (or CI's) config: the signing key, the hosts, and the CA that signed their
// listener certificates. run.py adds `-x targets_web1_port=<port>`.
{
  build: { signingKeyPath: 'signing.key' },
  httpClient: { caFile: 'tls/cert.pem' },  // verification stays on; this CA is trusted
  targets: {
    web1: {
      hostname: '127.0.0.1',
      port: 4000,
      sourcePatterns: { web: '', adhoc: '' },  // '' = the pattern given on the command line
    },
  },
}
