// Version 1: a directory and a config file in it.
local etcha = import '../lib/etcha/etcha.libsonnet';

{
  run: [
    etcha.dir(path='out/etc'),
    etcha.file(path='out/etc/app.conf', contents='# managed by agent\nport = 8080\n'),
  ],
}
