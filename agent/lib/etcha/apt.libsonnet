// Install Debian packages with apt-get (a name or a list of names). Check: every package is
// installed (dpkg-query). Remove: dpkg --remove (purge=true: --purge) of exactly these packages.
// Unlike apt-get remove, dpkg never removes other packages that depend on them: it refuses
// ("dependency problems") and leaves everything installed, selections included.

local h = import 'helpers.libsonnet';

function(packages, recommends=false, update=false, purge=false, id=null, onChange=[])
  local names = h.names(packages);
  assert std.length(names) > 0 : 'apt: packages must not be empty';
  local quoted = std.join(' ', [h.q(p) for p in names]);
  local env = 'DEBIAN_FRONTEND=noninteractive';
  local action = if purge then '--purge' else '--remove';
  {
    id: if id == null then 'apt %s' % std.join(' ', names) else id,
    check: |||
      for p in %s; do
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = 'install ok installed' ] || exit 1
      done
    ||| % quoted,
    change: (if update then 'apt-get update -q && ' else '') +
            '%s apt-get install -y -q%s -o Dpkg::Options::=--force-confold %s' % [
              env,
              if recommends then '' else ' --no-install-recommends',
              quoted,
            ],
    // The dry run refuses first: a refused real run would still mark the package "deinstall".
    remove: 'dpkg --dry-run %s %s >/dev/null && %s dpkg %s %s' % [action, quoted, env, action, quoted],
  } + h.onChange(onChange)
