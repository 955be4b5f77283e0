// Manage the symlink dst pointing at src. Remove deletes dst only while it is a symlink to src,
// never the link's target; anything else at dst fails the removal and nothing is deleted.
// An absolute dst moves under vars.root (set by `agent test`; '' on hosts); src, the link's
// target, is written as given.

local h = import 'helpers.libsonnet';

function(src, dst, id=null, onChange=[], agentBin=null)
  local bin = h.bin(agentBin);
  local args = ' -- ' + h.q(src) + ' ' + h.q(h.under(dst));
  {
    id: if id == null then 'symlink %s' % dst else id,
    check: '%s link check%s' % [bin, args],
    change: h.parents(dst) + '%s link change%s' % [bin, args],
    remove: '%s link remove%s' % [bin, args],
  } + h.onChange(onChange)
