// A pattern whose command fires the `deploy` event with its output when it changes.
// `etcha:<name>` in onChange is an event; the source must be allowed to send it (eventsSend).
{
  run: [
    {
      id: 'release',
      always: true,
      change: 'echo release 42',
      onChange: ['etcha:deploy'],
    },
  ],
}
