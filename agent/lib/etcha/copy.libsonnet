// Copy a local file or an http(s) URL (headers in the fragment: #Name:value\r\n...) to dst.
// mode defaults to the source's permission bits (0644 for a URL), as Etcha; owner/group default
// to keeping what dst has. Remove deletes dst only while it still has the source's contents.
// An absolute dst moves under vars.root (set by `agent test`; '' on hosts); src is read as given.

local h = import 'helpers.libsonnet';

function(src, dst, mode='', owner='', group='', id=null, onChange=[], agentBin=null)
  local bin = h.bin(agentBin);
  local d = h.under(dst);
  local args = h.flags(mode, owner, group) + ' -- ' + h.q(src) + ' ' + h.q(d);
  {
    id: if id == null then 'copy ' + h.s(dst) else id,
    check: h.t(bin) + ' copy check' + args,
    change: h.parents(dst) + h.t(bin) + ' copy change' + args,
    remove: h.t(bin) + ' copy remove -- ' + h.q(src) + ' ' + h.q(d),
  } + h.onChange(onChange)
