// Manage the symlink dst pointing at src. Remove deletes dst only while it is a symlink to src,
// never the link's target; anything else at dst fails the removal and nothing is deleted.
// An absolute dst moves under vars.root (set by `agent test`; '' on hosts); src, the link's
// target, is written as given.

local h = import 'helpers.libsonnet';

function(src, dst, id=null, onChange=[], agentBin=null)
  local bin = h.bin(agentBin);
  local args = ' -- ' + h.q(src) + ' ' + h.q(h.under(dst));
  {
    id: if id == null then 'symlink ' + h.s(dst) else id,
    check: h.t(bin) + ' link check' + args,
    change: h.parents(dst) + h.t(bin) + ' link change' + args,
    remove: h.t(bin) + ' link remove' + args,
  } + h.onChange(onChange)
