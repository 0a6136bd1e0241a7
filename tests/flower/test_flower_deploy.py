"""Real Flower deployments on loopback (scripts/deploy_local.sh): one SuperLink, three SuperNodes, `flwr run`.

Slow by nature on 2 cores (every Flower message starts a fresh ClientApp process that imports torch,
transformers and peft, ~10 s): each deployment takes one to two minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_flower_apps import nodrop_model, potara_overrides  # noqa: F401 (fixture)

from potara.flower.certs import make_credentials
from potara.flower.ports import free_port_block
from potara.models.adapters import deserialize, serialize

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "deploy_local.sh"
NODES = 3


class Deployment:
    """deploy_local.sh in its own session; ``stop`` ends it and anything it started that is still alive."""

    def __init__(self, workdir: Path, overrides: list[str], settings: dict[str, str], creds: Path | None = None):
        self.workdir, self.out = workdir, workdir / "out"
        workdir.mkdir(parents=True, exist_ok=True)
        run_config = [f"overrides='{' '.join(overrides)}'", f"out-dir='{self.out}'",
                      *(f"{k}={v}" for k, v in settings.items())]
        self.port = free_port_block(NODES + 1)
        cmd = [str(SCRIPT), "-n", str(NODES), "-p", str(self.port), "-w", str(workdir), "-t", "300",
               *(["-c", str(creds)] if creds else []), "--", *run_config]
        env = {**os.environ, "VENV": str(Path(sys.executable).parents[1])}
        self.log = (workdir / "deploy.out").open("w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def stop(self) -> None:
        """TERM the script (its trap stops what it started); then KILL every recorded process group left."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pid_file in self.workdir.glob("*.pid"):
            _kill_group(int(pid_file.read_text()))
        self.log.close()

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode ``i`` and its children (its SuperExec and ClientApp processes)."""
        pid = int((self.workdir / f"supernode_{i}.pid").read_text())
        ps = ["ps", "-o", "pid=", "--ppid", str(pid)]
        children = subprocess.run(ps, capture_output=True, text=True, check=False).stdout
        _kill_group(pid)
        for child in children.split():
            _kill_group(int(child))

    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())

    def text(self) -> str:
        return (self.workdir / "deploy.out").read_text()


def _kill_group(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass


def wait_for(path: Path, text: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"'{text}' did not appear {count}× in {path} within {timeout} s")


@pytest.fixture
def overrides(nodrop_model, synthetic_csv) -> list[str]:  # noqa: F811
    return [*potara_overrides(nodrop_model, synthetic_csv), "threads=1"]


REFERENCE = """
import json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[3], str(Path(sys.argv[3]).parent)]  # test_flower_apps and its conftest
from test_flower_apps import embedded
from potara.models.adapters import serialize
result, state = embedded(json.loads(sys.argv[1]))
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
(out / "federated.safetensors").write_bytes(serialize(state))
(out / "methods.json").write_text(json.dumps({n: r.per_client for n, r in result.methods.items()}))
"""


def embedded_reference(overrides: list[str], out: Path) -> subprocess.Popen:
    """The embedded engine in a fresh process, as the SuperNodes run (see the test below)."""
    cmd = [sys.executable, "-c", REFERENCE, json.dumps(overrides), str(out), str(Path(__file__).parent)]
    out.mkdir(parents=True, exist_ok=True)
    with (out.parent / "reference.log").open("w") as log:
        return subprocess.Popen(cmd, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)


def test_tls_and_supernode_auth_deployment_matches_the_embedded_engine(overrides, tmp_path):
    """Three authenticated SuperNodes over TLS (credentials made here), two rounds, every node up: the final
    federated adapter and every client's λ and accuracies equal the embedded engine's on the same seed.

    They are equal because both sample the same clients (``sample_clients``), give each the same seed, see the
    same batches and aggregate in the same order, from the same seeded initial adapter (local training seeds
    come from ``zlib.crc32`` of strings, the same in every process). One thing the core does not make
    process-independent is pinned here: the tiny model has no dropout (dropout draws from the global torch
    RNG, whose state differs between one process training every client and one process per client). Float
    tolerance covers thread-count differences.
    """
    began = time.monotonic()
    creds = make_credentials(tmp_path / "creds", NODES)
    reference = embedded_reference(overrides, tmp_path / "reference")
    try:
        deployment = Deployment(tmp_path / "deploy", overrides, {"evaluate-every": "0"}, creds)
        try:
            assert deployment.wait(400) == 0, deployment.text()[-3000:]
        finally:
            deployment.stop()
        took = time.monotonic() - began
        assert reference.wait(300) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()

    link_log = (deployment.workdir / "superlink.log").read_text()
    assert "Uvicorn running on https://127.0.0.1" in link_log  # TLS on the SuperLink
    assert (deployment.workdir / "register.log").read_text().count("registered successfully") == NODES
    assert link_log.count("[Fleet.ActivateNode] Activated") == NODES  # only registered keys get in

    flower = deserialize((deployment.out / "federated.safetensors").read_bytes())
    embedded_state = deserialize((tmp_path / "reference" / "federated.safetensors").read_bytes())
    assert set(flower) == set(embedded_state)
    for key, value in embedded_state.items():
        torch.testing.assert_close(flower[key], value, rtol=1e-4, atol=1e-6)
    theirs = json.loads((tmp_path / "reference" / "methods.json").read_text())
    summary = deployment.summary()
    for name in ("potara", "fedit", "local"):
        mine = summary["methods"][name]["per_client"]
        assert [r["client"] for r in mine] == [r["client"] for r in theirs[name]]
        assert [r["acc"] for r in mine] == pytest.approx([r["acc"] for r in theirs[name]], abs=1e-6)
    lams = [r["lambda"] for r in summary["methods"]["potara"]["per_client"]]
    assert lams == pytest.approx([r["lambda"] for r in theirs["potara"]], abs=1e-4)

    payload_bytes = len(serialize(flower))  # bytes are measured as the embedded engine measures them
    rounds = [json.loads(line) for line in (deployment.out / "rounds.jsonl").read_text().splitlines()]
    assert [(r["bytes_up"], r["bytes_down"]) for r in rounds] == [(NODES * payload_bytes,) * 2] * 2
    print(f"TLS deployment: {took:.0f} s; bytes per round up/down: {rounds[0]['bytes_up']}/{rounds[0]['bytes_down']}")


def test_killed_supernode_is_missing_and_the_run_completes(overrides, tmp_path):
    """SuperNode 2 is SIGKILLed once it has received its round-1 train message (its ClientApp is starting):
    round 1 aggregates the other two, and client_02 is reported missing, not as accuracy 0."""
    began = time.monotonic()
    deployment = Deployment(tmp_path, [*overrides, "fed.rounds=1"],
                            {"min-train-nodes": "2", "evaluate-every": "0", "round-timeout": "120.0"})
    try:
        wait_for(tmp_path / "supernode_2.log", "Receiving: train message", 1, 240)
        deployment.kill_node(2)
        assert deployment.wait(300) == 0, deployment.text()[-3000:]
    finally:
        deployment.stop()
    summary = deployment.summary()
    [round_] = [json.loads(line) for line in (deployment.out / "rounds.jsonl").read_text().splitlines()]
    assert round_["aggregated"] == ["client_00", "client_01"]
    assert round_["missing"] == ["client_02"] or [e["client"] for e in round_["errors"]] == ["client_02"]
    potara = summary["methods"]["potara"]
    assert potara["missing"] == ["client_02"]
    assert [r["client"] for r in potara["per_client"]] == ["client_00", "client_01"]
    print(f"kill-a-node deployment: {time.monotonic() - began:.0f} s")


def run_intruder(deployment: Deployment, key: Path) -> int:
    """A SuperNode with ``key`` joins the deployment's SuperLink (in its own session, logging to intruder.log);
    its exit status, once it gives up (it is killed after 120 s)."""
    cmd = ["flower-supernode", "--root-certificates", str(key.parent / "ca.crt"), "--auth-supernode-private-key",
           str(key), "--superlink", f"127.0.0.1:{deployment.port}", "--port", str(free_port_block(1)),
           "--node-config", f"partition-id=0 num-partitions={NODES}"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with (deployment.workdir / "intruder.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            return proc.wait(120)
        finally:
            _kill_group(proc.pid)


def test_tls_auth_secagg_and_dp_deployment_refuses_an_intruder_and_matches_the_embedded_engine(overrides, tmp_path):
    """TLS, SuperNode authentication, SecAgg+ (Flower's workflow and ``secaggplus_mod``) and client-level DP
    (``fixedclipping_mod`` on the nodes, Flower's client-side wrapper adding the noise): the run completes, the
    server's train replies carry no adapter, and the federated adapter equals the embedded DP-FedAvg's within
    SecAgg's quantization (equal weights: one step 2c/T per element). The noise multiplier is tiny so that the two
    engines' noise (NumPy's and torch's) is below float32 resolution and the adapters can be compared.

    Meanwhile a fourth SuperNode whose key was never registered tries to join: the SuperLink refuses it (it exits,
    activated never), and the three registered nodes complete the round (one deployment checks both, to keep the
    suite's minutes down)."""
    began = time.monotonic()
    sets = [*overrides, "fed.rounds=1", "privacy.noise_multiplier=1e-9", "privacy.clip_norm=0.05"]
    creds = make_credentials(tmp_path / "creds", NODES + 1)  # deploy_local.sh registers node_0..node_2 only
    reference = embedded_reference(sets, tmp_path / "reference")
    try:
        deployment = Deployment(tmp_path / "deploy", sets, {"evaluate-every": "0", "secagg": "true"}, creds)
        try:
            wait_for(deployment.workdir / "superlink.log", "Uvicorn running on https://", 1, 120)
            code = run_intruder(deployment, creds / f"node_{NODES}")
            assert deployment.wait(500) == 0, deployment.text()[-3000:]
        finally:
            deployment.stop()
        took = time.monotonic() - began
        assert reference.wait(300) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()

    intruder_log = (deployment.workdir / "intruder.log").read_text()
    assert code != 0 and "Failed to activate SuperNode" in intruder_log, intruder_log[-2000:]
    link_log = (deployment.workdir / "superlink.log").read_text()
    assert "Uvicorn running on https://127.0.0.1" in link_log
    assert "No SuperNode found with the given public key" in link_log
    assert link_log.count("[Fleet.ActivateNode] Activated") == NODES
    summary = deployment.summary()
    assert summary["flower"]["secagg"] and summary["flower"]["dp_clipping"] == "client"
    assert summary["privacy"]["noise_multiplier"] == 1e-9
    messages = [json.loads(line) for line in (deployment.out / "messages.jsonl").read_text().splitlines()]
    up = [m for m in messages if m["phase"] == "train" and m["direction"] == "up"]
    assert len(up) == 4 * NODES and all(not any(m["records"]["arrays"].values()) for m in up)
    flower = deserialize((deployment.out / "federated.safetensors").read_bytes())
    embedded_state = deserialize((tmp_path / "reference" / "federated.safetensors").read_bytes())
    step = 2 * 8.0 / 2**22  # secagg-clipping-range 8, secagg-quantization-range 2**22 (the defaults)
    difference = max(float((flower[k] - embedded_state[k]).abs().max()) for k in embedded_state)
    assert difference <= step + 1e-6
    assert [r["client"] for r in summary["methods"]["potara"]["per_client"]] == [f"client_{i:02d}" for i in range(NODES)]
    print(f"TLS + auth + SecAgg+ + DP deployment: {took:.0f} s; max |Flower − embedded| = {difference:.3g}")
