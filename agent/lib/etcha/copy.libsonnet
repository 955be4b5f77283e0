// Copy a local file or an http(s) URL (headers in the fragment: #Name:value\r\n...) to dst.
// mode/owner/group default to keeping what dst has (0644 for a new file).

local h = import 'helpers.libsonnet';

function(src, dst, mode='', owner='', group='', id=null, onChange=[], agentBin=null)
  local bin = h.bin(agentBin);
  local args = h.flags(mode, owner, group) + ' -- ' + h.q(src) + ' ' + h.q(dst);
  {
    id: if id == null then 'copy %s' % dst else id,
    check: '%s copy check%s' % [bin, args],
    change: '%s copy change%s' % [bin, args],
    remove: '%s copy remove -- %s %s' % [bin, h.q(src), h.q(dst)],
  } + h.onChange(onChange)
