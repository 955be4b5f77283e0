// The agent standard library. Import this file and call the functions with named arguments:
//
//   local etcha = import '../lib/etcha/etcha.libsonnet';
//   { run: [etcha.file(path='/etc/motd', contents='hello\n')] }
//
// Each function returns a command (or a list of commands) for a pattern's run list. Helpers run
// the `agent` binary; set agentBin=... or vars.agentBin to use another one (`agent run`, `local`
// and `test` set vars.agentBin to their own executable by default).
//
// The file, dir, copy, line and symlink functions move absolute paths under vars.root: '' on
// hosts, a fresh temporary directory under `agent test` (unless --in-place), so tests leave the
// real paths alone. Commands outside these functions run as written, also under `agent test`.
{
  apt: import 'apt.libsonnet',
  aptKey: import 'aptKey.libsonnet',
  copy: import 'copy.libsonnet',
  dir: import 'dir.libsonnet',
  file: import 'file.libsonnet',
  group: import 'group.libsonnet',
  line: import 'line.libsonnet',
  native: import 'native.libsonnet',
  symlink: import 'symlink.libsonnet',
  systemdUnit: import 'systemdUnit.libsonnet',
  user: import 'user.libsonnet',
}
