"""`ochre train` and `ochre train-tokenizer` across nodes: two torchrun "nodes" on this machine
(c10d rendezvous and gloo on 127.0.0.1, one process each) train exactly what one node with two
processes trains; a resume on another world size, or with a run folder the nodes do not share, is
refused on every rank in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ochre.cli import main
from ochre.models.checkpoint import latest_checkpoint

# One thread per process in both layouts: torchrun sets it only for several processes per node, and
# a CPU kernel may sum in another order with another thread count.
ENV = {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """6 clip shards (one per recording: 1 test, 1 val, 4 train) and their token shards, from a small
    tokenizer."""
    from ochre.models.tokenizer import TokenizerConfig, TokenizerTrainConfig
    from ochre.train.tokenizer import train as train_tokenizer

    root = tmp_path_factory.mktemp("nodes")
    assert main(["synth", str(root / "src"), "--episodes", "6", "--steps", "120", "--seed", "3"]) == 0
    assert main(["prepare", str(root / "src"), str(root / "clips"), "--per-shard", "1"]) == 0
    train_tokenizer(root / "clips", root / "tok", TokenizerConfig(channels=(8, 16, 16), blocks=(0, 1, 1),
                                                                 code_dim=8, codebook_size=64),
                    TokenizerTrainConfig(steps=2, batch=8, warmup=1), progress=False, eval_frames_n=8)
    assert main(["tokenize", str(root / "clips"), "--tokenizer", str(root / "tok"), "--out", str(root / "tokens")]) == 0
    return root


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nodes: int, procs: int, argv, per_node=None) -> list[subprocess.CompletedProcess]:
    """`torchrun --nnodes nodes --nproc-per-node procs -m ochre argv` once per node, all on this machine
    (`per_node(node)`: extra flags for one node); waits for all of them."""
    port = _port()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}, **ENV}
    launchers = []
    for node in range(nodes):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--node-rank", str(node),
               "--nproc-per-node", str(procs), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "test", "--local-addr", "127.0.0.1", "-m", "ochre", *argv,
               *(per_node(node) if per_node else [])]
        # A session of its own: a hang is ended with every process the launcher started.
        launchers.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          start_new_session=True))
    done = []
    try:
        for p in launchers:
            out, err = p.communicate(timeout=TIMEOUT_S)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in launchers:
            if p.poll() is None:
                # SIGTERM first: torchrun ends its workers, which sit in sessions of their own.
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
    return done


def _ok(runs):
    for r in runs:
        assert r.returncode == 0, "\n".join(x.stderr[-3000:] for x in runs if x.returncode)


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(x["step"], x["loss"]) for x in map(json.loads, (run / "log.jsonl").read_text().splitlines())]


def _weights(run: Path) -> bytes:
    return (latest_checkpoint(run) / "model.safetensors").read_bytes()


TOKENIZER = ["--steps", "4", "--batch", "4", "--log-every", "1", "--ckpt-every", "2", "--device", "cpu"]
WORLD = ["--steps", "4", "--batch", "2", "--window", "6", "--unroll", "2", "--log-every", "1", "--ckpt-every", "2",
         "--shift-per-unit", "4", "4",                     # six short recordings are too few to measure it
         "--device", "cpu"]


@pytest.fixture(scope="module")
def tokenizer_on_two_nodes(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("two_nodes") / "run"
    _ok(_torchrun(2, 1, ["train-tokenizer", str(data / "clips"), "--out", str(run), *TOKENIZER]))
    return run


@pytest.mark.parametrize("command", ["train-tokenizer", "train"])
def test_two_nodes_train_what_one_node_of_two_processes_trains(data, tokenizer_on_two_nodes, tmp_path, command):
    """Same seed and data: the same global ranks read the same shards and all-reduce the same
    gradients (gloo sums two ranks in one order), so weights and losses agree exactly."""
    source, flags = (data / "clips", TOKENIZER) if command == "train-tokenizer" else (data / "tokens", WORLD)
    two = tokenizer_on_two_nodes if command == "train-tokenizer" else tmp_path / "two_nodes"
    if command == "train":
        _ok(_torchrun(2, 1, [command, str(source), "--out", str(two), *flags]))
    one = tmp_path / "one_node"
    _ok(_torchrun(1, 2, [command, str(source), "--out", str(one), *flags]))
    assert latest_checkpoint(two).name == latest_checkpoint(one).name == "step_00000004"
    assert _losses(two) == _losses(one) and [s for s, _ in _losses(two)] == [1, 2, 3, 4]
    assert _weights(two) == _weights(one)


@pytest.mark.slow
def test_a_resume_on_another_world_size_is_refused_in_one_line(data, tokenizer_on_two_nodes):
    """The data stream is dealt by global rank: one process cannot continue a two-rank run exactly."""
    r = subprocess.run([sys.executable, "-m", "ochre", "train-tokenizer", str(data / "clips"), "--out",
                        str(tokenizer_on_two_nodes), *TOKENIZER, "--steps", "6", "--resume"],
                       capture_output=True, text=True, timeout=TIMEOUT_S)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "ranks 2 -> 1" in lines[0], r.stderr[-2000:]
    assert latest_checkpoint(tokenizer_on_two_nodes).name == "step_00000004"


@pytest.mark.slow
def test_nodes_that_do_not_share_the_run_folder_are_refused_alike(data, tokenizer_on_two_nodes, tmp_path):
    """Node 0's --out holds the run's checkpoints, node 1's is a folder of its own with none (a
    node-local disk): resumed, the ranks would start from different steps. Every rank stops instead."""
    folders = [tokenizer_on_two_nodes, tmp_path / "elsewhere"]
    runs = _torchrun(2, 1, ["train-tokenizer", str(data / "clips"), *TOKENIZER, "--steps", "6", "--resume"],
                     per_node=lambda node: ["--out", str(folders[node])])
    assert [r.returncode for r in runs] != [0, 0]
    said = [line for r in runs for line in r.stderr.splitlines() if line.startswith("ochre train-tokenizer:")]
    assert len(said) == 2, [r.stderr[-2000:] for r in runs]
    for line in said:
        assert "ranks see different checkpoints" in line and "storage every node sees" in line, line
        assert "[4, -1]" in line or "[-1, 4]" in line, line           # rendezvous order picks rank 0
    assert latest_checkpoint(tokenizer_on_two_nodes).name == "step_00000004"
