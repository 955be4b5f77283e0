// A pull-only host: source `core` pulls an http(s) URL every second. Requests are conditional
// (If-None-Match with the stored ETag, If-Modified-Since): an unchanged file costs a 304, no
// download and no verification. run.py sets the URL with
// `-x sources_core_pullPaths=["http://127.0.0.1:<port>/core.jwt"]`.
{
  run: {
    listenAddress: '',  // pull-only: no listener
    stateDir: 'state',
    verifyKeys: [importstr 'public.key'],
  },
  sources: {
    core: {
      pullPaths: ['http://127.0.0.1:8080/core.jwt'],
      runFrequency: '1s',  // '5m' on real hosts
    },
  },
  build: { signingKeyPath: 'signing.key' },
}
