// Where the sample patterns write, and what they may do.
//
// The standard library's file, dir, copy, line and symlink functions already move absolute
// paths under vars.root, which `agent test` sets to a private temporary directory per pattern
// (and which is '' on hosts), so the samples pass real paths such as '/etc/cron.d/backup-etc'
// to them. `root` here is for the samples' own commands, outside the library (the nginx reload
// marker): vars.root, else vars.testDir (`agent lint`, `agent test --in-place`).
//
// On a host `real` is true and `root` is ''. Under `agent test` and `agent lint` (vars.test is
// true) the parts that need root or a network (useradd, apt-get, systemctl, chown) are left
// out: `real` is false. A render with vars.test but neither directory (`agent local -s test`
// without sources.test.vars.root) fails instead of touching the host.
local vars = std.native('getConfig')().vars;
local testing = std.get(vars, 'test', false);
local root = std.get(vars, 'root', '');

{
  real: !testing,
  root:
    if !testing then ''
    else
      local dir = if std.isString(root) && root != '' then root else std.get(vars, 'testDir', '');
      assert std.isString(dir) && std.startsWith(dir, '/') : 'vars.test needs vars.root or vars.testDir: an absolute directory';
      dir,
  // Prepend to a run list: evaluates `root`, so a sample refuses vars.test without a directory.
  guard: assert std.isString(self.root); [],
  // The owner for files: the given one on hosts, none under test (no chown without root).
  owner(name): if testing then '' else name,
}
