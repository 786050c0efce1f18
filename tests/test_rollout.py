"""One container rolled out to three Docker hosts: the local engine and two in network namespaces (issue 7).

The namespaced hosts are dockerd started by ``scripts/netns-daemon``; each pulls
``127.0.0.1:5000/…`` from the stack's registry served on its own loopback, so
one reference, pinned by digest, names the same image everywhere.  What runs
on each host is read from that host's own socket; the page is fetched from
inside the container (ports on a namespaced host are not the test's to reach).
"""
from __future__ import annotations

import tempfile
from typing import Any, Dict, List, Tuple

import pytest

from cdtools import deploy
from service_fixtures import (BROKEN_CMD, Host, Pushed, local_host, netns_hosts, page_in, pushed,  # noqa: F401
                              registry_env, start_netns_daemon, stop_netns_daemon)

pytestmark = pytest.mark.e2e

#: the busybox httpd of the test images ignores SIGTERM; the stop ends in the kill sooner
COMMON = ["--stop-timeout", "1", "--health-timeout", "30"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Tuple[int, str, str]:
    code = deploy.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def containers(host: Host, name: str) -> Dict[str, Any]:
    """NAME and its companions on ``host``, by name: {"": NAME, "-previous": …, "-cdtools-lock": …}."""
    found = {}
    for suffix in ("", "-previous", "-cdtools-new", "-cdtools-lock"):
        resp = host.api.request("GET", f"/containers/{name}{suffix}/json")
        if resp.status == 200:
            found[suffix] = resp.json()
    return found


def state(host: Host, name: str) -> Tuple[str, bool, str]:
    """(image reference, running, page) of NAME on ``host``."""
    doc = containers(host, name)[""]
    return doc["Config"]["Image"], doc["State"]["Running"], page_in(host.api, doc["Id"])


def report(out: str) -> Dict[str, str]:
    """The per-host lines at the end of a rollout: {host: what happened}."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("rollout of ") and line.endswith(":"))
    table = {}
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        host, _, what = line.strip().partition("  ")
        table[host] = what.strip()
    return table


@pytest.fixture
def three(netns_hosts: List[Host]) -> List[Host]:
    return [local_host()] + netns_hosts


def hosts_flag(hosts: List[Host]) -> str:
    return ",".join(h.docker_host for h in hosts)


def test_three_hosts_get_the_new_version_one_by_one_and_two_at_a_time(capsys, three, unique, pushed: Pushed,
                                                                       registry_env) -> None:
    name = f"{unique}-web"
    v1 = pushed.httpd("1")
    pushed.httpd("2")
    code, out, err = run(capsys, "--hosts", hosts_flag(three), "--name", name, "--image", v1, *COMMON)
    assert code == 0, err
    assert [state(h, name) for h in three] == [(v1, True, "page 1")] * 3
    table = report(out)
    assert list(table) == [h.docker_host for h in three]  # in the order given
    assert all(v.startswith("deployed") for v in table.values()), table

    # by tag, two hosts at a time: every host gets the digest the registry named for the tag
    code, out, err = run(capsys, "--hosts", hosts_flag(three), "--name", name, "--image", pushed.tag("2"),
                         "--max-parallel", "2", *COMMON)
    assert code == 0, err
    v2 = f"{pushed.repo}@{pushed.digests['2']}"
    assert [state(h, name) for h in three] == [(v2, True, "page 2")] * 3
    for host in three:
        kept = containers(host, name)
        assert kept["-previous"]["Config"]["Image"] == v1  # each host keeps its own rollback
        assert "-cdtools-lock" not in kept and "-cdtools-new" not in kept  # each host's lock released
    assert all(v.startswith("deployed") for v in report(out).values())


def test_a_broken_image_stops_after_the_first_host_which_is_rolled_back(capsys, three, unique, pushed: Pushed,
                                                                        registry_env) -> None:
    name = f"{unique}-web"
    v1 = pushed.httpd("1")
    broken = pushed.httpd("broken", cmd=BROKEN_CMD)
    code, _, err = run(capsys, "--hosts", hosts_flag(three), "--name", name, "--image", v1, *COMMON)
    assert code == 0, err
    ids = [containers(h, name)[""]["Id"] for h in three]

    code, out, err = run(capsys, "--hosts", hosts_flag(three), "--name", name, "--image", broken, *COMMON)
    assert code == 6, (out, err)
    line = err.strip()
    assert "\n" not in line and "Traceback" not in err
    assert f"stopped at {three[0].docker_host} (host 1 of 3)" in line and "exited with code 3" in line
    assert "not touched" in line and three[1].docker_host in line and three[2].docker_host in line
    table = report(out)
    assert table[three[0].docker_host].startswith("rolled back")
    assert table[three[1].docker_host] == f"not touched: still runs {v1}"
    assert table[three[2].docker_host] == f"not touched: still runs {v1}"
    assert "cdtools-broken-marker" in out  # the failed container's last log line

    # the first host runs the old version again; the other two were never touched
    assert [state(h, name) for h in three] == [(v1, True, "page 1")] * 3
    assert [containers(h, name)[""]["Id"] for h in three] == ids
    for host in three:
        assert set(containers(host, name)) == {""}  # no lock, no leftover, nothing kept: nothing happened


def test_a_host_that_cannot_pull_stops_the_rollout_before_any_host_changes(capsys, three, unique, pushed: Pushed,
                                                                           registry_env) -> None:
    name = f"{unique}-web"
    v1, v2 = pushed.httpd("1"), pushed.httpd("2")
    with tempfile.TemporaryDirectory(prefix="cdtns-", dir="/tmp") as parent:
        directory = f"{parent}/h"
        # a host with no registry on its loopback: its pull is refused
        lonely = start_netns_daemon(directory, registry=False)
        try:
            hosts = three[:2] + [lonely]
            code, _, err = run(capsys, "--hosts", hosts_flag(three[:2]), "--name", name, "--image", v1, *COMMON)
            assert code == 0, err
            ids = [containers(h, name)[""]["Id"] for h in three[:2]]

            code, out, err = run(capsys, "--hosts", hosts_flag(hosts), "--name", name, "--image", v2, *COMMON)
            assert code == 1, (out, err)  # nothing changed anywhere
            assert "before any host was changed" in err and lonely.docker_host in err and "pull" in err
            assert [containers(h, name)[""]["Id"] for h in three[:2]] == ids
            assert [state(h, name) for h in three[:2]] == [(v1, True, "page 1")] * 2
            assert containers(lonely, name) == {}
        finally:
            stop_netns_daemon(directory)
