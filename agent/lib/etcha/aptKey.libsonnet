// Add an apt signing key as <dir>/<name>.asc and, with repo, a sources list
// <listDir>/<name>.list: "deb [signed-by=<key file>] <repo>". key is the ASCII-armored key or an
// http(s) URL to fetch it from. A change to either triggers apt-get update. Returns a list of
// commands whose ids start with id (default "aptKey <name>"); onChange is added to the key and
// list commands. Remove deletes the key and list files only while they have the contents the
// pattern wrote (see file and copy); the directories are never removed.

local copy = import 'copy.libsonnet';
local file = import 'file.libsonnet';
local h = import 'helpers.libsonnet';

function(name, key, repo=null, dir='/etc/apt/keyrings', listDir='/etc/apt/sources.list.d', id=null, onChange=[], agentBin=null)
  local prefix = if id == null then 'aptKey %s' % name else id;
  local keyPath = '%s/%s.asc' % [dir, name];
  local listPath = '%s/%s.list' % [listDir, name];
  local updateID = '%s update' % prefix;
  local triggers = h.onChange([h.target(updateID)] + h.names(onChange));
  local keyCmd = (
    if std.startsWith(key, 'http://') || std.startsWith(key, 'https://') then
      copy(src=key, dst=keyPath, mode='0644', id='%s key' % prefix, agentBin=agentBin)
    else
      file(path=keyPath, contents=key, id='%s key' % prefix, agentBin=agentBin)
  );
  [
    keyCmd { change: 'mkdir -p %s && %s' % [h.q(h.under(dir)), super.change] } + triggers,
  ] + (
    if repo == null then [] else [
      file(
        path=listPath,
        contents='deb [signed-by=%s] %s\n' % [keyPath, repo],
        id='%s list' % prefix,
        agentBin=agentBin,
      ) { change: 'mkdir -p %s && %s' % [h.q(h.under(listDir)), super.change] } + triggers,
    ]
  ) + [
    {
      id: updateID,
      change: 'apt-get update -q',
    },
  ]
