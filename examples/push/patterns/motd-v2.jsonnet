// Version 2: the directory and its file are gone from the pattern, a new file is added.
// Pushing it removes what was dropped (in reverse order) and changes what is new.
local etcha = import '../lib/etcha/etcha.libsonnet';

{
  run: [
    etcha.file(path='out/issue', contents='agent example host\n'),
  ],
}
