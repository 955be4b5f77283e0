// Shared helpers of the agent standard library; not part of its public interface.

local native = import 'native.libsonnet';

{
  // The helper binary used in scripts: the agentBin argument, else getConfig().vars.agentBin,
  // else 'agent'. Used unquoted, so a value such as 'python3 -m agent' works.
  bin(agentBin)::
    if agentBin != null then agentBin
    else
      local cfg = native.getConfig();
      local vars = if std.isObject(cfg) && std.isObject(std.get(cfg, 'vars', null)) then cfg.vars else {};
      local b = std.get(vars, 'agentBin', null);
      if std.isString(b) && b != '' then b else 'agent',

  // Single-quote a string for sh/bash.
  q(s):: std.escapeStringBash('%s' % s),

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
