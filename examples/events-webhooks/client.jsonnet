// The pusher's config. run.py adds -x targets_host1_port=<port>.
{
  build: { signingKeyPath: 'signing.key' },
  httpClient: { caFile: 'tls/cert.pem' },
  targets: {
    host1: { hostname: '127.0.0.1', port: 4000, sourcePatterns: { app: '' } },
  },
}
