// Manage a local user (getent/useradd/usermod/userdel). Fields left null are not managed.
// gid is the primary group (name or number); groups are supplementary groups that the user must
// be a member of (added, never removed). Remove deletes the account (userdel) and keeps the home
// directory and every file. removeHome=true (userdel -r) also deletes the home directory and mail
// spool, but userdel refuses a home that the user does not own or that another user shares.

local h = import 'helpers.libsonnet';

function(name, uid=null, gid=null, home=null, shell=null, comment=null, groups=[], system=false, createHome=false, removeHome=false, id=null, onChange=[])
  local n = h.q(name);
  local exists = 'getent passwd %s >/dev/null' % n;
  local field(f, want) = '[ "$(getent passwd %s | cut -d: -f%d)" = %s ]' % [n, f, want];
  local checks = [exists] +
                 (if uid == null then [] else [field(3, h.q(uid))]) +
                 (if gid == null then [] else [field(4, '"$(getent group %s | cut -d: -f3)"' % h.q(gid))]) +
                 (if comment == null then [] else [field(5, h.q(comment))]) +
                 (if home == null then [] else [field(6, h.q(home))]) +
                 (if shell == null then [] else [field(7, h.q(shell))]) +
                 [
                   'case " $(id -nG %s) " in *%s*) ;; *) false ;; esac' % [n, h.q(' %s ' % g)]
                   for g in h.names(groups)
                 ];
  local opts = std.join('', [
    if uid == null then '' else ' -u %s' % h.q(uid),
    if gid == null then '' else ' -g %s' % h.q(gid),
    if comment == null then '' else ' -c %s' % h.q(comment),
    if home == null then '' else ' -d %s' % h.q(home),
    if shell == null then '' else ' -s %s' % h.q(shell),
  ]);
  local supplementary = std.join(',', h.names(groups));
  {
    id: if id == null then 'user %s' % name else id,
    check: std.join(' && ', checks),
    change: 'if %s; then %s; else useradd%s%s%s%s %s; fi' % [
      exists,
      if opts == '' && supplementary == '' then 'true'
      else 'usermod%s%s %s' % [opts, if supplementary == '' then '' else ' -a -G %s' % h.q(supplementary), n],
      opts,
      if supplementary == '' then '' else ' -G %s' % h.q(supplementary),
      if system then ' -r' else '',
      if createHome then ' -m' else ' -M',
      n,
    ],
    remove: 'if %s; then userdel%s %s; fi' % [exists, if removeHome then ' -r' else '', n],
  } + h.onChange(onChange)
