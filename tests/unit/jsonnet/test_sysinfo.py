"""Host facts for vars.sysinfo."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from pathlib import Path

import pytest

from agent.jsonnet import sysinfo

_KEYS = {
    "cpuLogical",
    "hostname",
    "fqdn",
    "memoryTotal",
    "osType",
    "osID",
    "osIDLike",
    "osName",
    "osVersion",
    "osVersionID",
    "osVersionCodename",
    "kernelRelease",
    "kernelVersion",
    "machine",
    "runtimeArch",
    "packageManager",
    "containerEngine",
    "ipv4",
    "ipv6",
}


def test_collect_reports_every_documented_fact_for_this_host() -> None:
    info = sysinfo.collect()
    assert set(info) >= _KEYS
    assert info["cpuLogical"] == os.cpu_count()
    assert info["hostname"] == socket.gethostname()
    assert info["osType"] == "linux"
    assert info["machine"] == platform.machine()
    assert info["runtimeArch"] == sysinfo.go_arch(platform.machine())
    assert info["kernelRelease"] == platform.release()
    assert info["kernelVersion"] == os.uname().version
    assert isinstance(info["ipv4"], list) and isinstance(info["ipv6"], list)
    assert "127.0.0.1" not in info["ipv4"] and "::1" not in info["ipv6"]


def test_memory_total_is_megabytes_from_meminfo() -> None:
    kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    assert sysinfo.collect()["memoryTotal"] == kb // 1024


def test_os_release_fields_come_from_etc_os_release() -> None:
    release = sysinfo.parse_os_release(Path("/etc/os-release").read_text())
    info = sysinfo.collect()
    assert info["osID"] == release["ID"]
    assert info["osName"] == release.get("NAME", "")
    assert info["osVersionID"] == release.get("VERSION_ID", "")
    assert info["osIDLike"] == release.get("ID_LIKE", "")


def test_parse_os_release_unquotes_and_skips_comments() -> None:
    text = '# comment\nNAME="Fedora Linux"\nID=fedora\nID_LIKE=\'rhel centos\'\nX="a \\"b\\""\n\n'
    assert sysinfo.parse_os_release(text) == {
        "NAME": "Fedora Linux",
        "ID": "fedora",
        "ID_LIKE": "rhel centos",
        "X": 'a "b"',
    }


def test_addresses_match_ip_command_when_available() -> None:
    ip = "/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else "/sbin/ip"
    if not Path(ip).exists():
        pytest.skip("no ip command to compare with (.ci/run installs iproute2)")
    out = subprocess.run([ip, "-o", "addr"], capture_output=True, text=True, check=True).stdout
    v4, v6 = set(), set()
    for line in out.splitlines():
        parts = line.split()
        family, addr = parts[2], parts[3].split("/")[0]
        if family == "inet" and not addr.startswith("127."):
            v4.add(addr)
        elif family == "inet6" and addr != "::1":
            v6.add(addr)
    info = sysinfo.collect()
    assert set(info["ipv4"]) == v4
    assert set(info["ipv6"]) == v6


def test_ipv4_parses_local_host_routes_only() -> None:
    trie = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 10.1.0.0/24 2 0 2
           |-- 10.1.0.0
              /24 link UNICAST
           |-- 10.1.0.7
              /32 host LOCAL
        |-- 10.1.0.255
           /32 link BROADCAST
Local:
           |-- 10.1.0.7
              /32 host LOCAL
           |-- 192.168.5.4
              /32 host LOCAL
"""
    assert sysinfo.ipv4_addresses(trie) == ["10.1.0.7", "192.168.5.4"]
    assert sysinfo.ipv4_addresses("") == []


def test_ipv6_parses_if_inet6_without_loopback() -> None:
    text = (
        "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n"
        "fd000000000000000000000000000002 04 40 00 82     eth0\n"
        "00000000000000000000000000000001 01 80 10 80       lo\n"
    )
    assert sysinfo.ipv6_addresses(text) == ["fd00::2", "fe80::fc:ff:fe00:1"]


def test_package_manager_and_container_engine_found_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("apk", "podman"):
        exe = tmp_path / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    info = sysinfo.collect()
    assert (info["packageManager"], info["containerEngine"]) == ("apk", "podman")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    info = sysinfo.collect()
    assert (info["packageManager"], info["containerEngine"]) == ("", "")


def test_fqdn_comes_from_hosts_file_not_dns() -> None:
    hosts = "127.0.0.1 localhost\n10.0.0.5 web01.example.com web01 # comment\n"
    assert sysinfo._fqdn("web01", hosts) == "web01.example.com"
    assert sysinfo._fqdn("db", hosts) == "db"
    assert sysinfo._fqdn("db.example.org", hosts) == "db.example.org"


def test_go_names() -> None:
    assert [sysinfo.go_arch(m) for m in ("x86_64", "aarch64", "i686", "armv7l", "ppc64le")] == [
        "amd64",
        "arm64",
        "386",
        "arm",
        "ppc64le",
    ]
    assert [sysinfo.go_os(p) for p in ("linux", "darwin", "win32", "freebsd14")] == [
        "linux",
        "darwin",
        "windows",
        "freebsd",
    ]


def test_collect_is_fast_and_spawns_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("sysinfo must not spawn processes")

    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    monkeypatch.setattr(os, "fork", no_process)
    sysinfo.collect()
    start = time.perf_counter()
    for _ in range(5):
        sysinfo.collect()
    assert (time.perf_counter() - start) / 5 < 0.05


def test_static_facts_are_read_once_and_changing_ones_every_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sysinfo._static.cache_clear()
    read: list[str] = []
    real = sysinfo._read_text

    def spy(path: str) -> str:
        read.append(path)
        return real(path)

    monkeypatch.setattr(sysinfo, "_read_text", spy)
    first = sysinfo.collect()
    assert "/etc/os-release" in read or "/usr/lib/os-release" in read
    read.clear()
    second = sysinfo.collect()
    assert list(second) == list(first)
    assert second["osID"] == first["osID"] and second["cpuLogical"] == first["cpuLogical"]
    assert not {"/etc/os-release", "/usr/lib/os-release"} & set(read)
    assert {"/etc/hosts", "/proc/meminfo", "/proc/net/fib_trie", "/proc/net/if_inet6"} <= set(read)
