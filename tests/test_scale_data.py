"""`ochre prepare|tokenize --engine ray` on a Ray cluster started here (loopback, 2 CPUs, torn down
at the end): the outputs are the bytes a local run writes, whatever the worker count; a worker or
the driver killed mid-run changes nothing; a bad recording is named and skipped as locally."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ochre.cli import main
from ochre.data.prepare import PrepareConfig, prepare
from ochre.parallel import Engine, ordered_map

CFG = PrepareConfig(per_shard=2, segment=32)
BAD = {"v3_synth_1_0001_corrupt_video": "recording.mp4", "v3_synth_1_0003_bad_npz": "malformed rendered.npz"}
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}   # a throwaway loopback cluster


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _session_pids(sid: int) -> list[int]:
    """Processes of the session a process we started leads (Ray's workers sit in groups of their own)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (OSError, ProcessLookupError):
                pass
    return pids


def _kill_session(proc: subprocess.Popen) -> None:
    """End a process we started in a session of its own, and every process it started there.
    SIGKILL: a throwaway cluster has nothing to save, and a SIGTERMed `ray start` takes seconds."""
    for pid in _session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head node of 2 CPUs on 127.0.0.1; yields its address. Drivers here join it."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'ochre[ray]'; .ci/run installs it)")
    gcs, node, objects, agent, metrics, env_agent = _free_ports(6)
    log = open(tmp_path_factory.mktemp("ray") / "head.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--node-manager-port", str(node),
         "--object-manager-port", str(objects), "--dashboard-agent-listen-port", str(agent),
         "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(env_agent),
         "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
        env={**os.environ, **RAY_ENV}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in RAY_ENV.items():
            mp.setenv(k, v)
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    socket.create_connection(("127.0.0.1", gcs), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"the Ray head did not start:\n{Path(log.name).read_text()[-3000:]}")
                    time.sleep(0.2)
            yield {"address": f"127.0.0.1:{gcs}", "sid": proc.pid}
        finally:
            _kill_session(proc)
            log.close()


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """6 good synthetic recordings and 2 corrupt ones between them."""
    root = tmp_path_factory.mktemp("scale") / "src"
    assert main(["synth", str(root), "--episodes", "6", "--steps", "100", "--seed", "1"]) == 0
    video = shutil.copytree(root / "v3_synth_1_0001", root / "v3_synth_1_0001_corrupt_video")
    (video / "recording.mp4").write_bytes(os.urandom(3000))
    npz = shutil.copytree(root / "v3_synth_1_0003", root / "v3_synth_1_0003_bad_npz")
    (npz / "rendered.npz").write_bytes(b"PK\x03\x04garbage")
    return root


@pytest.fixture(scope="module")
def local(src):
    out = src.parent / "local"
    prepare(src, out, CFG, workers=2, progress=False)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_on_ray_writes_the_bytes_of_a_local_run(head, src, local, tmp_path, workers):
    out = tmp_path / "ray"
    engine = Engine("ray", workers=workers, address=head["address"])
    summary = prepare(src, out, CFG, progress=False, engine=engine)
    assert summary["kept"] == 6 and summary["skipped"] == 2
    got, want = _files(out), _files(local)
    assert sorted(got) == sorted(want) and len(want) == 3 + 4 * 2      # config, index, report; 4 shards
    assert [name for name in want if got[name] != want[name]] == []


def test_a_corrupt_recording_is_named_and_skipped_as_locally(head, src, local, tmp_path, capsys):
    """Through the CLI: the same report.json bytes, each bad recording named with its reason."""
    out = tmp_path / "ray"
    assert main(["prepare", str(src), str(out), "--per-shard", "2", "--segment", "32", "--engine", "ray",
                 "--address", head["address"]]) == 0
    assert "prepared 6/8 recordings" in capsys.readouterr().out
    assert (out / "report.json").read_bytes() == (local / "report.json").read_bytes()
    skipped = {e["source"]: e["reason"] for e in json.loads((out / "report.json").read_text())["skipped"]}
    assert set(skipped) == set(BAD) and all(BAD[name] in skipped[name] for name in BAD), skipped


def _task_pids(sid: int, title: str) -> list[int]:
    """Ray worker processes of our head (its session) running the task `title` right now."""
    pids = []
    for pid in _session_pids(sid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith(f"ray::{title}"):
            pids.append(pid)
    return pids


def test_a_worker_killed_mid_run_changes_nothing(head, src, local, tmp_path):
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_worker():
        while not stop.is_set() and not killed:
            for pid in _task_pids(head["sid"], "_worker"):     # ochre.data.prepare._worker, one recording
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    try:
        summary = prepare(src, tmp_path / "ray", CFG, progress=False, engine=Engine("ray", address=head["address"]))
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was caught running a recording"
    assert summary["kept"] == 6                                   # Ray retried the killed worker's recording
    assert _files(tmp_path / "ray") == _files(local)


def test_a_killed_driver_resumes_to_the_same_bytes(head, src, local, tmp_path):
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "ochre", "prepare", str(src), str(out), "--per-shard", "2", "--segment", "32",
           "--engine", "ray", "--address", head["address"], "--workers", "1"]
    driver = subprocess.Popen(cmd, env={**os.environ, **RAY_ENV}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "shards" / "clips-000000.json").exists():
            assert driver.poll() is None and time.monotonic() < deadline, "the driver ended before its first shard"
            time.sleep(0.01)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        _kill_session(driver)
    assert not (out / "index.json").exists()                      # killed mid-run, not after it
    summary = prepare(src, out, CFG, progress=False, engine=Engine("ray", address=head["address"]))
    assert 0 < summary["shards_written"] < 4
    assert _files(out) == _files(local)


def _crash_on_odd(x: int) -> int:
    if x % 2:
        os._exit(1)                                               # a worker that dies, as a segfault would
    return 10 * x


def _refuse_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is refused")
    return x


@pytest.fixture
def by_value():
    """Ray ships this module's functions by value while the test runs (workers cannot import it)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_an_item_whose_worker_always_dies_is_reported_and_the_rest_kept(head, by_value):
    with ordered_map(Engine("ray", address=head["address"]), 4,
                     crashed=lambda item, why: f"item {item}: {why}") as mapper:
        got = list(mapper(_crash_on_odd, [0, 1, 2, 4]))
    assert got[0] == 0 and got[2:] == [20, 40]
    assert got[1].startswith("item 1: its worker process died on all 3 tries"), got[1]


def test_an_error_in_a_task_is_the_error_a_local_run_raises(head, by_value):
    for engine in (Engine("local", workers=1), Engine("ray", address=head["address"])):
        with ordered_map(engine, 4) as mapper, pytest.raises(ValueError) as raised:
            list(mapper(_refuse_three, [1, 2, 3, 4]))
        assert type(raised.value) is ValueError and str(raised.value) == "three is refused"


def test_tokenize_on_ray_writes_the_bytes_of_a_local_run(head, local, tmp_path):
    from ochre.models.tokenizer import TokenizerConfig, TokenizerTrainConfig
    from ochre.train.tokenizer import train

    train(local, tmp_path / "tok", TokenizerConfig(channels=(8, 16, 16), blocks=(0, 1, 1), code_dim=8,
                                                   codebook_size=64),
          TokenizerTrainConfig(steps=3, batch=8, warmup=1), progress=False, eval_frames_n=8)
    flags = ["--tokenizer", str(tmp_path / "tok"), "--batch", "16", "--device", "cpu"]
    assert main(["tokenize", str(local), "--out", str(tmp_path / "local_tokens"), *flags]) == 0
    assert main(["tokenize", str(local), "--out", str(tmp_path / "ray_tokens"), *flags, "--engine", "ray",
                 "--address", head["address"]]) == 0
    got, want = _files(tmp_path / "ray_tokens"), _files(tmp_path / "local_tokens")
    assert sorted(got) == sorted(want) and len(want) == 2 + 4 * 2
    assert [name for name in want if got[name] != want[name]] == []


def test_an_unreachable_cluster_is_one_line(head, src, tmp_path, capsys):
    (closed,) = _free_ports(1)
    assert main(["prepare", str(src), str(tmp_path / "out"), "--engine", "ray", "--address",
                 f"127.0.0.1:{closed}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ochre prepare: cannot reach the Ray cluster at 127.0.0.1:{closed}")


def test_missing_ray_is_one_line(src, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)                 # what `import ray` sees without the extra
    assert main(["prepare", str(src), str(tmp_path / "out"), "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ochre prepare: --engine ray needs Ray, which is not installed: pip install 'ochre[ray]' "
                   "(the same Ray version on every node of the cluster)"]
