// A deploy user with SSH keys: the account, ~/.ssh (0700) and authorized_keys (0600).
// Keys come from vars.deployKeys (set them per source or target), or the example key below.
local etcha = import 'etcha/etcha.libsonnet';
local sb = import 'sandbox.libsonnet';

local vars = std.native('getConfig')().vars;
local keys = std.get(vars, 'deployKeys', [
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBRbN6yQ2mLZrPBvdXJZ6cQ2xGL3LpcWbN3oWcmGXZ0y ci@example',
]);
local home = '/home/deploy';

{
  run: sb.guard + (
    if sb.real then [
      etcha.user(name='deploy', home='/home/deploy', shell='/bin/bash', createHome=true, removeHome=true),
    ] else [
      etcha.dir(path=home, mode='0750'),
    ]
  ) + [
    etcha.dir(path=home + '/.ssh', mode='0700', owner=sb.owner('deploy'), group=sb.owner('deploy')),
    etcha.file(
      path=home + '/.ssh/authorized_keys',
      contents=std.join('\n', keys) + '\n',
      mode='0600',
      owner=sb.owner('deploy'),
      group=sb.owner('deploy'),
    ),
  ],
}
