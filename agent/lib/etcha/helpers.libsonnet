// Shared helpers of the agent standard library; not part of its public interface.

local native = import 'native.libsonnet';

// Evaluated once per render (getConfig does not change during one), not once per call.
local configVars =
  local cfg = native.getConfig();
  if std.isObject(cfg) && std.isObject(std.get(cfg, 'vars', null)) then cfg.vars else {};

local defaultBin =
  local b = std.get(configVars, 'agentBin', null);
  if std.isString(b) && b != '' then b else 'agent';

local root =
  local r = std.get(configVars, 'root', '');
  if !std.isString(r) || r == '' || r == '/' then ''
  else if std.endsWith(r, '/') then std.substr(r, 0, std.length(r) - 1)
  else r;

{
  // The helper binary used in scripts: the agentBin argument, else getConfig().vars.agentBin,
  // else 'agent'. Used unquoted, so a value such as 'python3 -m agent' works.
  bin(agentBin)::
    if agentBin != null then agentBin else defaultBin,

  // vars.root without a trailing '/': '' on hosts; `agent test` sets a fresh temporary directory
  // (unless --in-place), so the file, dir, copy, line and symlink functions work under it.
  root():: root,

  // An absolute path moved under vars.root; relative paths (and every path on a host) unchanged.
  under(path)::
    local r = self.root();
    if r != '' && std.startsWith(path, '/') then r + path else path,

  // The directory part of a path ('/' for a top-level entry).
  dirname(path)::
    local parts = std.split(path, '/');
    local d = std.join('/', parts[0:std.length(parts) - 1]);
    if d == '' then '/' else d,

  // Under a root, a change first creates the parents of the moved path (mkdir -p) inside the
  // root; on a host (root '') nothing is added, so host behaviour is unchanged.
  parents(path)::
    if self.root() != '' && std.startsWith(path, '/') then 'mkdir -p -- ' + self.q(self.dirname(self.under(path))) + ' && '
    else '',

  // Single-quote a string for sh/bash: std.escapeStringBash('%s' % s), without the cost of
  // std.format and std.escapeStringBash (Jsonnet code in go-jsonnet, ~1 ms a call).
  q(s):: "'" + std.strReplace(self.s(s), "'", "'\"'\"'") + "'",

  // '%s' % v, without std.format's cost for a string.
  s(v):: if std.isString(v) then v else '%s' % v,

  // One value of '%s' % [a, b, ...] (std.toString), without std.format's cost for a string.
  t(v):: if std.isString(v) then v else std.toString(v),

  // The -p/-o/-g flags of the helper commands; empty values are left out.
  flags(mode='', owner='', group='')::
    assert mode == null || std.isString(mode) : 'mode must be an octal string such as "0644"';
    std.join('', [
      if mode != null && mode != '' then ' -p ' + self.q(mode) else '',
      if owner != null && owner != '' then ' -o ' + self.q(owner) else '',
      if group != null && group != '' then ' -g ' + self.q(group) else '',
    ]),

  // onChange as a field, only when there are targets. Accepts a string or a list.
  onChange(targets)::
    local list = if targets == null then [] else if std.isString(targets) then [targets] else targets;
    if std.length(list) > 0 then { onChange: list } else {},

  // Escape a literal for use in an anchored onChange/onRemove target regexp.
  target(id):: '^' + std.join('', [
    if std.member('\\.^$|?*+()[]{}', c) then '\\' + c else c
    for c in std.stringChars(id)
  ]) + '$',

  // A list of names from a string or a list.
  names(value):: if std.isString(value) then [value] else value,
}
