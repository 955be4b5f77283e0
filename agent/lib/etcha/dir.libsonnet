// Manage a directory (created with missing parents): permissions and owner.
// Remove deletes the directory only when it is empty; a directory with anything in it (or a
// symlink in its place) fails the removal with "directory not empty" and nothing is deleted.
// An absolute path moves under vars.root (set by `agent test`; '' on hosts); the id keeps path.

local h = import 'helpers.libsonnet';

function(path, mode='0755', owner='', group='', id=null, onChange=[], agentBin=null)
  local bin = h.bin(agentBin);
  local p = h.under(path);
  local args = h.flags(mode, owner, group) + ' -- ' + h.q(p);
  {
    id: if id == null then 'dir ' + h.s(path) else id,
    check: h.t(bin) + ' dir check' + args,
    change: h.t(bin) + ' dir change' + args,
    remove: h.t(bin) + ' dir remove -- ' + h.q(p),
  } + h.onChange(onChange)
