// A pull-only host: source `core` pulls dist/core.jwt (a file; could be an NFS mount, a
// synced directory or an https URL) every second. No listener is needed for pulls.
{
  run: {
    listenAddress: '',  // do not listen: nothing is pushed to this host
    stateDir: 'state',
    verifyKeys: [importstr 'public.key'],
  },
  sources: {
    core: {
      pullPaths: ['dist/core.jwt'],  // tried in order; a file or an http(s) URL
      runFrequency: '1s',  // pull, and re-run the checks to correct drift; '5m' on real hosts
    },
  },
  build: { signingKeyPath: 'signing.key' },  // for `agent build` on the same machine
}
