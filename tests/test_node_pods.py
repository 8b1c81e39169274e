"""What only a real node can show about the operator's Job manifest (kube/jobs.py), manifest-only until now: its
restricted security context admitted and in force inside the container, the kubelet's termination message limit,
`kubectl logs` of a run, and a graceful SIGTERM turned into a checkpoint and the run's honest failure summary.

Each Job here is exactly what the operator creates for a run of the tiny campaign (``jobs.run_job`` and
``jobs.run_config_map`` on the engine's first launch), with the trainer image; where a probe is needed, only the
container's command differs (the manifest's own override, ``trainer.command``). Nothing is played.
"""

from __future__ import annotations

import json
import time

import pytest

from flopwise.contract import RunSummary
from flopwise.kube import jobs
from flopwise.kube.executor import Snapshot, observe_run
from node_campaign import PROBE_UID, operator_job, pod_of, terminated, wait_for

pytestmark = pytest.mark.timeout(2700)  # the first node test also starts the node and installs the chart

# Reads what the container is allowed, from inside it, and reports it as its termination message.
PROBE = r"""
import json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w") as f:
            f.write("x")
        os.remove(os.path.join(path, ".probe"))
        return True
    except OSError as e:
        return e.strerror
report = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
          "token": os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount"),
          "root": writable("/"), "tmp": writable("/tmp"), "out": writable("/out"),
          "spec": os.path.exists("/etc/flopwise/spec.json"), "data": sorted(os.listdir("/datasets/stdlib"))[:2],
          "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
          "seccomp": status["Seccomp"].strip()}
open("/dev/termination-log", "w").write(json.dumps(report))
print("probe", json.dumps(report))
"""


def test_restricted_security_context_is_in_force_inside_the_container(flopwise_release) -> None:
    release = flopwise_release
    job = operator_job(release, "probe-sc", command=["python", "-c", PROBE])
    pod, state = terminated(release, job)
    assert state["exitCode"] == 0, state
    seen = json.loads(state["message"])
    assert seen["uid"] == jobs.RUN_AS_USER and seen["gid"] == jobs.RUN_AS_USER, seen
    assert jobs.RUN_AS_USER in seen["groups"], seen  # fsGroup
    assert seen["token"] is False, "a service-account token is mounted in a training Pod"
    assert seen["root"] == "Read-only file system", seen  # readOnlyRootFilesystem
    assert seen["tmp"] is True and seen["out"] is True and seen["spec"] is True, seen
    assert seen["data"] == ["meta.json", "train-00000.bin"], seen  # the token shards, through the claim
    assert int(seen["cap_eff"], 16) == 0, seen  # capabilities: drop ALL
    assert seen["no_new_privs"] == "1", seen  # allowPrivilegeEscalation: false
    assert seen["seccomp"] == "2", seen  # RuntimeDefault: a filter is in force
    # and `kubectl logs` of it: what the container printed, through the kubelet
    assert "probe {" in release.kubectl("logs", pod["metadata"]["name"]).stdout


def test_the_kubelet_keeps_4096_bytes_of_a_termination_message(flopwise_release) -> None:
    """The trainer caps its summary at 4096 bytes (contract.TERMINATION_MESSAGE_LIMIT) because that is what the
    kubelet keeps: a longer message arrives cut, and a cut summary is refused, never half-trusted."""
    release = flopwise_release
    job = operator_job(release, "probe-msg", command=["python", "-c",
                                                       "open('/dev/termination-log','w').write('{' + 'x' * 9999)"])
    _, state = terminated(release, job)
    assert len(state["message"].encode()) == 4096, len(state["message"])
    with pytest.raises(ValueError):
        RunSummary.from_message(state["message"])


def test_sigterm_checkpoints_and_reports_an_honest_failure(flopwise_release) -> None:
    """SIGTERM to the running trainer (what the kubelet sends on deletion or eviction): it checkpoints, reports a
    failed summary that says where it stopped, and the operator's mapping charges what it used."""
    release = flopwise_release
    job = operator_job(release, "probe-term", tokens=256 * 40_000)

    def training():
        pod = pod_of(release, job)
        if pod and pod["status"].get("phase") == "Running":
            logs = release.kubectl("logs", pod["metadata"]["name"], check=False).stdout
            return pod if "step" in logs else None
        return None

    pod = wait_for(training, timeout=180, what="the trainer training")
    time.sleep(2.0)
    release.kubectl("exec", pod["metadata"]["name"], "--", "python", "-c",
                    "import os, signal; os.kill(1, signal.SIGTERM)")
    pod, state = terminated(release, job)
    summary = RunSummary.from_message(state["message"])
    assert state["exitCode"] != 0 and summary.status == "failed", (state, summary)
    assert "SIGTERM" in summary.exit_reason and "checkpointed" in summary.exit_reason, summary.exit_reason
    assert summary.steps > 0 and summary.flops > 0, summary
    checkpoint = release.outputs_dir / PROBE_UID / summary.run_id / "checkpoint.pt"
    assert checkpoint.is_file(), f"no checkpoint at {checkpoint}"
    observation = observe_run(summary.run_id, Snapshot(pods={summary.run_id: [pod]}))
    assert observation.state == "failed" and observation.summary == summary
