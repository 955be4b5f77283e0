// Manage a local group (getent/groupadd/groupmod/groupdel). gid null = any gid.
// Remove deletes the group (groupdel); groupdel refuses the primary group of an existing user.

local h = import 'helpers.libsonnet';

function(name, gid=null, system=false, id=null, onChange=[])
  local n = h.q(name);
  local exists = 'getent group %s >/dev/null' % n;
  {
    id: if id == null then 'group %s' % name else id,
    check: exists + (
      if gid == null then '' else ' && [ "$(getent group %s | cut -d: -f3)" = %s ]' % [n, h.q(gid)]
    ),
    change: 'if %s; then %s; else groupadd%s%s %s; fi' % [
      exists,
      if gid == null then 'true' else 'groupmod -g %s %s' % [h.q(gid), n],
      if gid == null then '' else ' -g %s' % h.q(gid),
      if system then ' -r' else '',
      n,
    ],
    remove: 'if %s; then groupdel %s; fi' % [exists, n],
  } + h.onChange(onChange)
