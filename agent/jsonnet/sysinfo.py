"""Host facts for ``vars.sysinfo`` (and the ``getArch``/``getOS`` native functions).

Responsibility: :func:`collect` returns a fresh, JSON-ready dict describing the host the agent runs
on. Invariants:

- No network access and no subprocess: every fact comes from the Python runtime, ``uname``,
  ``/proc`` and ``/etc`` files, and ``PATH`` look-ups. A missing source gives an empty value
  (``""``, ``0`` or ``[]``), never an error, so rendering never fails because of sysinfo.
- Fast (well under 50 ms) so it can be collected for every render. Facts that cannot change while
  the process runs (CPU count, the OS and architecture names, the kernel, os-release) are read
  once per process (:func:`_static`, a cache of immutable pairs); the rest (host name, fqdn,
  memory, tools on ``PATH``, addresses) are read afresh on every call, as Etcha's are per render.
- Architecture and OS names use Go's ``GOARCH``/``GOOS`` spelling (``amd64``, ``arm64``,
  ``linux``), as Etcha reports them.
- ``fqdn`` is read from ``/etc/hosts`` (the canonical name of the line that lists the host name),
  not from DNS, so it cannot stall on an unreachable resolver.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable

from agent.core.which import which

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
    from typing import Any

__all__ = ["collect", "go_arch", "go_os"]

_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "x64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv8l": "arm",
    "armv7l": "arm",
    "armv6l": "arm",
    "armv5tel": "arm",
    "arm": "arm",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "x86": "386",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips": "mips",
    "mipsel": "mipsle",
    "mips64": "mips64",
    "mips64el": "mips64le",
    "loongarch64": "loong64",
}
_PACKAGE_MANAGERS = ("apt", "dnf", "yum", "apk", "pacman", "zypper")
_CONTAINER_ENGINES = ("docker", "podman")
_OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")
_OS_RELEASE_KEYS = {
    "osID": "ID",
    "osIDLike": "ID_LIKE",
    "osName": "NAME",
    "osVersion": "VERSION",
    "osVersionID": "VERSION_ID",
    "osVersionCodename": "VERSION_CODENAME",
}


def go_arch(machine: str | None = None) -> str:
    """Return the Go ``GOARCH`` name of a machine string.

    Args:
        machine: a ``uname -m`` value; ``None`` means this host's.

    Returns:
        ``amd64``, ``arm64``, ``386``, ``arm``, ... or the lower-cased machine string when unknown.
    """
    m = (os.uname().machine if machine is None else machine).lower()  # = platform.machine()
    return _GOARCH.get(m, m)


def go_os(plat: str | None = None) -> str:
    """Return the Go ``GOOS`` name of a ``sys.platform`` string.

    Args:
        plat: a ``sys.platform`` value; ``None`` means this interpreter's.

    Returns:
        ``linux``, ``darwin``, ``windows``, ``freebsd``, ...
    """
    p = sys.platform if plat is None else plat
    if p.startswith("win") or p == "cygwin":
        return "windows"
    for name in ("linux", "freebsd", "openbsd", "netbsd", "darwin", "aix", "sunos"):
        if p.startswith(name):
            return "solaris" if name == "sunos" else name
    return p


def collect() -> dict[str, Any]:
    """Collect the host facts.

    Returns:
        A new dict with ``cpuLogical``, ``hostname``, ``fqdn``, ``memoryTotal`` (MB), ``osType``,
        the ``os*`` fields of os-release, ``kernelRelease``, ``kernelVersion``, ``machine``,
        ``runtimeArch``, ``packageManager``, ``containerEngine``, ``ipv4`` and ``ipv6``.
    """
    hostname = os.uname().nodename  # = socket.gethostname() (gethostname(2) is uname's nodename)
    static = _static()
    info: dict[str, Any] = {
        "cpuLogical": static[0][1],
        "hostname": hostname,
        "fqdn": _fqdn(hostname, _read_text("/etc/hosts")),
        "memoryTotal": _memory_total_mb(_read_text("/proc/meminfo")),
    }
    info.update(static[1:6])
    info["packageManager"] = _first_on_path(_PACKAGE_MANAGERS)
    info["containerEngine"] = _first_on_path(_CONTAINER_ENGINES)
    info["ipv4"] = ipv4_addresses(_read_text("/proc/net/fib_trie"))
    info["ipv6"] = ipv6_addresses(_read_text("/proc/net/if_inet6"))
    info.update(static[6:])
    return info


@functools.cache
def _static() -> tuple[tuple[str, Any], ...]:
    """The facts that cannot change while the process runs, read once (in :func:`collect`'s key
    order: ``cpuLogical``, then ``osType``, the kernel, ``machine``, ``runtimeArch``, then the
    ``os*`` fields)."""
    uname = os.uname()
    release: dict[str, str] = {}
    for name in _OS_RELEASE_FILES:
        text = _read_text(name)
        if text:
            release = parse_os_release(text)
            break
    return (
        ("cpuLogical", os.cpu_count() or 0),
        ("osType", go_os()),
        ("kernelRelease", uname.release),
        ("kernelVersion", uname.version),
        ("machine", uname.machine),
        ("runtimeArch", go_arch()),
        *((key, release.get(field, "")) for key, field in _OS_RELEASE_KEYS.items()),
    )


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5) ``KEY=value`` lines (shell-style quoting, comments ignored).

    Args:
        text: the file contents.

    Returns:
        The key/value pairs.
    """
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            quote = value[0]
            value = value[1:-1]
            if quote == '"':
                for ch in ('\\"', "\\$", "\\`", "\\\\"):
                    value = value.replace(ch, ch[1])
        out[key.strip()] = value
    return out


def ipv4_addresses(fib_trie: str) -> list[str]:
    """Return the host's non-loopback IPv4 addresses from ``/proc/net/fib_trie`` text.

    Args:
        fib_trie: the file contents (may be empty).

    Returns:
        Sorted unique addresses whose trie entry is a ``/32 host LOCAL`` route.
    """
    import ipaddress  # stdlib, only when the system facts are collected

    found: set[ipaddress.IPv4Address] = set()
    last = ""
    for line in fib_trie.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            last = stripped[4:].strip()
        elif stripped.startswith("/32 host LOCAL") and last:
            try:
                addr = ipaddress.IPv4Address(last)
            except ValueError:
                continue
            if not addr.is_loopback:
                found.add(addr)
    return [str(a) for a in sorted(found)]


def ipv6_addresses(if_inet6: str) -> list[str]:
    """Return the host's non-loopback IPv6 addresses from ``/proc/net/if_inet6`` text.

    Args:
        if_inet6: the file contents (may be empty).

    Returns:
        Sorted unique compressed addresses.
    """
    import ipaddress  # stdlib, only when the system facts are collected

    found: set[ipaddress.IPv6Address] = set()
    for line in if_inet6.splitlines():
        parts = line.split()
        if not parts or len(parts[0]) != 32:
            continue
        try:
            addr = ipaddress.IPv6Address(bytes.fromhex(parts[0]))
        except ValueError:
            continue
        if not addr.is_loopback:
            found.add(addr)
    return [a.compressed for a in sorted(found)]


def _fqdn(hostname: str, hosts: str) -> str:
    if "." in hostname:
        return hostname
    for raw in hosts.splitlines():
        names = raw.split("#", 1)[0].split()[1:]
        if hostname in names:
            for name in names:
                if "." in name:
                    return name
    return hostname


def _memory_total_mb(meminfo: str) -> int:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) // 1024
    return 0


def _first_on_path(names: Iterable[str]) -> str:
    for name in names:
        if which(name) is not None:
            return name
    return ""


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""
