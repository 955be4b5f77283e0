// Version 1 of what the web server hands out.
local etcha = import '../lib/etcha/etcha.libsonnet';

{
  run: [
    etcha.dir(path='out'),
    etcha.file(path='out/site.conf', contents='version = 1\n'),
  ],
}
