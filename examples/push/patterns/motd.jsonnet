// Version 1: a directory and a file in it. Paths are relative to the daemon's directory.
local etcha = import '../lib/etcha/etcha.libsonnet';

{
  run: [
    etcha.dir(path='out/app'),
    etcha.file(path='out/app/motd', contents='managed by agent\n'),
  ],
}
