// Manage a systemd unit: optionally its unit file (contents), its enabled and running state.
// Writing the unit file reloads systemd and, with restart, restarts the unit. Returns a list of
// commands whose ids start with id (default "systemdUnit <name>"); onChange is added to each
// command that is not only triggered. Remove stops and disables the unit and deletes the unit
// file only while it has the contents the pattern wrote (an edited unit file stays, see file).

local file = import 'file.libsonnet';
local h = import 'helpers.libsonnet';

function(name, contents=null, dir='/etc/systemd/system', enable=true, start=true, restart=true, id=null, onChange=[], agentBin=null)
  local prefix = if id == null then 'systemdUnit %s' % name else id;
  local unit = h.q(name);
  local restartID = '%s restart' % prefix;
  local userTriggers = h.onChange(onChange);
  (
    if contents == null then [] else [
      file(path='%s/%s' % [dir, name], contents=contents, id='%s file' % prefix, agentBin=agentBin) + {
        change: super.change + ' && systemctl daemon-reload',
        remove: super.remove + ' && systemctl daemon-reload',
      } + h.onChange((if restart then [h.target(restartID)] else []) + h.names(onChange)),
    ]
  ) + (
    if enable then [
      {
        id: '%s enable' % prefix,
        check: 'systemctl is-enabled --quiet %s' % unit,
        change: 'systemctl enable %s' % unit,
        remove: 'systemctl disable %s' % unit,
      } + userTriggers,
    ] else []
  ) + (
    if start then [
      {
        id: '%s start' % prefix,
        check: 'systemctl is-active --quiet %s' % unit,
        change: 'systemctl start %s' % unit,
        remove: 'systemctl stop %s' % unit,
      } + userTriggers,
    ] else []
  ) + (
    if restart && contents != null then [
      {
        id: restartID,
        change: 'systemctl restart %s' % unit,
      },
    ] else []
  )
