// A package, its config file, and a service reload when (and only when) the config changes.
// onChange names the reload command's id; a command without a check runs only when triggered.
local etcha = import 'etcha/etcha.libsonnet';
local sb = import 'sandbox.libsonnet';

local conf = |||
  server {
    listen 80 default_server;
    server_name _;
    root /var/www/html;
    location /healthz { return 200 "ok\n"; }
  }
|||;

{
  run: sb.guard + (
    if sb.real then [etcha.apt(packages='nginx')] else []
  ) + [
    etcha.file(
      path='/etc/nginx/conf.d/site.conf',
      contents=conf,
      onChange=['reload nginx'],
    ),
    {
      id: 'reload nginx',
      change:
        if sb.real then 'nginx -t && systemctl reload-or-restart nginx'
        else 'date +%s >> ' + std.escapeStringBash(sb.root + '/reloads'),
    },
  ] + (
    if sb.real then [
      {
        id: 'nginx running',
        check: 'systemctl is-active --quiet nginx',
        change: 'systemctl enable --now nginx',
      },
    ] else []
  ),
}
