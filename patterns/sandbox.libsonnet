// Where the sample patterns write, and what they may do.
//
// On a host, `root` is '' (real paths) and `real` is true. Under `agent test` (vars.test is
// true) every path is moved under vars.sandbox, a directory the caller creates, and the parts
// that need root or a network (useradd, apt-get, systemctl, chown) are left out: `real` is
// false. A test run without vars.sandbox fails to render instead of touching the host.
local vars = std.native('getConfig')().vars;
local testing = std.get(vars, 'test', false);

{
  real: !testing,
  root:
    if !testing then ''
    else
      local dir = std.get(vars, 'sandbox', '');
      assert std.isString(dir) && std.startsWith(dir, '/') : 'agent test needs vars.sandbox: an absolute directory';
      dir,
  // The owner for files: the given one on hosts, none under test (no chown without root).
  owner(name): if testing then '' else name,
}
