// Version 2: the config file moves; the old one is removed by the host on its next pull.
local etcha = import '../lib/etcha/etcha.libsonnet';

{
  run: [
    etcha.dir(path='out/etc'),
    etcha.file(path='out/etc/app2.conf', contents='# managed by agent\nport = 9090\n'),
  ],
}
