// Version 2: new contents for the same file.
local etcha = import '../lib/etcha/etcha.libsonnet';

{
  run: [
    etcha.dir(path='out'),
    etcha.file(path='out/site.conf', contents='version = 2\n'),
  ],
}
