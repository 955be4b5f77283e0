// Manage a regular file: exact contents (null = any contents), permissions and owner.
// Remove deletes only a regular file that still has the contents the pattern wrote (with
// contents=null: an empty file, which is what change creates); a file with other contents, a
// directory or a symlink in its place fails the removal and nothing is deleted.
// The contents travel on the command's stdin, so size is not limited by the script length.
// (A change run through another command's onFail gets no stdin; do not target file commands
// from onFail.)
// An absolute path moves under vars.root (set by `agent test`; '' on hosts); the id keeps path.

local h = import 'helpers.libsonnet';

function(path, contents=null, mode='0644', owner='', group='', id=null, onChange=[], agentBin=null)
  local bin = h.bin(agentBin);
  local p = h.under(path);
  local args = h.flags(mode, owner, group) + ' -- ' + h.q(p) + (if contents == null then '' else ' -');
  {
    id: if id == null then 'file ' + h.s(path) else id,
    check: h.t(bin) + ' file check' + args,
    change: h.parents(path) + h.t(bin) + ' file change' + args,
    remove: h.t(bin) + ' file remove -- ' + h.q(p) + (if contents == null then " ''" else ' -'),
  } + (if contents == null then {} else { stdin: contents }) + h.onChange(onChange)
