// Where the sample patterns write, and what they may do.
//
// On a host, `root` is '' (real paths) and `real` is true. Under `agent test` and `agent lint`
// (vars.test is true) every path is moved under vars.sandbox when the config sets it, else
// under vars.testDir, the private temporary directory `agent test` makes for each pattern; the
// parts that need root or a network (useradd, apt-get, systemctl, chown) are left out: `real`
// is false. A render with vars.test but neither directory (`agent local -s test` without
// vars.sandbox) fails instead of touching the host.
local vars = std.native('getConfig')().vars;
local testing = std.get(vars, 'test', false);

{
  real: !testing,
  root:
    if !testing then ''
    else
      local dir = std.get(vars, 'sandbox', std.get(vars, 'testDir', ''));
      assert std.isString(dir) && std.startsWith(dir, '/') : 'vars.test needs vars.sandbox or vars.testDir: an absolute directory';
      dir,
  // The owner for files: the given one on hosts, none under test (no chown without root).
  owner(name): if testing then '' else name,
}
