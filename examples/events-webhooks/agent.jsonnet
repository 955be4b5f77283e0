// Events and webhooks (Etcha's trigger tutorial): source `app` receives pushes and may send
// any event; source `handler` runs only when triggered: by the `deploy` event, or by an HTTP
// request to /hooks/deploy, which it answers with its `webhookBody` output.
{
  run: {
    listenAddress: '127.0.0.1:4000',  // run.py: -x run_listenAddress=127.0.0.1:<free port>
    stateDir: 'state',
    verifyKeys: [importstr 'public.key'],
    tlsCertificatePath: 'tls/cert.pem',
    tlsKeyPath: 'tls/key.pem',
    systemMetricsKey: importstr 'metrics.key',  // GET /etcha/v1/system/metrics?key=...
  },
  sources: {
    app: {
      allowPush: true,
      eventsSend: '.*',  // a regexp of the events this source may fire
    },
    handler: {
      triggerOnly: true,  // no run at start-up or on a schedule
      eventsReceive: ['deploy'],
      webhookPaths: ['/hooks/deploy'],
      commands: [
        {
          id: 'record trigger',
          always: true,
          change: |||
            mkdir -p out
            printf 'trigger=%s event=%s output=%s key=%s\n' "$ETCHA_SOURCE_TRIGGER" \
              "${ETCHA_EVENT_NAME:-}" "${ETCHA_EVENT_OUTPUT:-}" "${ETCHA_EVENT_PUBLIC_KEY:-}" >> out/triggers.log
          |||,
        },
        {
          id: 'webhook reply',
          always: true,
          change: |||
            printf 'method=%s path=%s query=%s\n' "${ETCHA_WEBHOOK_METHOD:-}" \
              "${ETCHA_WEBHOOK_PATH:-}" "${ETCHA_WEBHOOK_QUERY:-}"
            printf 'body=%s\n' "$(printf '%s' "${ETCHA_WEBHOOK_BODY:-}" | base64 -d)"
            printf '%s\n' "${ETCHA_WEBHOOK_HEADERS:-}" | grep -i '^x-my-header' || true
          |||,
          onChange: ['etcha:webhookBody'],  // this output is the HTTP response
        },
        {
          id: 'content type',
          always: true,
          change: 'echo text/plain',
          onChange: ['etcha:webhookContentType'],
        },
      ],
    },
  },
}
