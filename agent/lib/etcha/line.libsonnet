// Manage a line in a file by regexp (multi-line mode). Every match is replaced with replacement
// (${1} or $name expand groups, $$ is a literal $); when nothing matches, replacement is
// appended as a line. Remove deletes only the lines change wrote: whole-line matches whose
// replacement is the line itself, and lines equal to the replacement. The file stays.
// An absolute path moves under vars.root (set by `agent test`; '' on hosts); the id keeps path.

local h = import 'helpers.libsonnet';

function(path, match, replacement, id=null, onChange=[], agentBin=null)
  local bin = h.bin(agentBin);
  local args = ' -- ' + std.join(' ', [h.q(h.under(path)), h.q(match), h.q(replacement)]);
  {
    id: if id == null then 'line ' + h.t(path) + ' ' + h.t(match) else id,
    check: h.t(bin) + ' line check' + args,
    change: h.parents(path) + h.t(bin) + ' line change' + args,
    remove: h.t(bin) + ' line remove' + args,
  } + h.onChange(onChange)
