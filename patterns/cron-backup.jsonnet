// A nightly cron job: the script it runs (0755) and its /etc/cron.d entry (0644, owned by
// root, as cron requires). Removing the pattern removes both.
local etcha = import 'etcha/etcha.libsonnet';
local sb = import 'sandbox.libsonnet';

local script = |||
  #!/bin/sh
  # Managed by agent: nightly archive of /etc.
  set -eu
  mkdir -p /var/backups/etc
  tar -czf "/var/backups/etc/etc-$(date +%F).tar.gz" -C / etc
  find /var/backups/etc -name 'etc-*.tar.gz' -mtime +14 -delete
|||;

{
  run: sb.guard + [
    etcha.file(path='/usr/local/sbin/backup-etc', contents=script, mode='0755', owner=sb.owner('root')),
    etcha.file(
      path='/etc/cron.d/backup-etc',
      contents='# Managed by agent\n30 2 * * * root /usr/local/sbin/backup-etc\n',
      mode='0644',
      owner=sb.owner('root'),
    ),
  ],
}
