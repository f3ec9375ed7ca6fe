"""Resume after a real SIGKILL, and torchrun with two gloo processes: both end in the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_extract_helpers import ARCH, REPO, make_checkpoint, make_cub

from partbench.feature_cache import load_features
from partbench.features import cache_dir_for, run_extract

pytestmark = pytest.mark.timeout(400)
SHARD = 8  # 68 retrieval patches -> 9 shards


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("inputs")
    return make_cub(base / "data"), make_checkpoint(base / "dino.pth")


def _args(cub: Path, ckpt: Path, features: Path) -> dict:
    return {
        "checkpoint": ckpt,
        "arch": ARCH,
        "data_root": cub,
        "features_dir": features,
        "device": "cpu",
        "batch_size": 5,  # batches of 5 inside shards of 8: a final partial batch in every shard
        "num_workers": 0,
        "progress": False,
        "shard_size": SHARD,
        "tokens": True,
    }


def _files(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cache.iterdir())}


def test_killed_run_resumes_from_its_last_shard_to_identical_bytes(inputs, tmp_path: Path) -> None:
    cub, ckpt = inputs
    killed = tmp_path / "killed"
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from partbench.features import extract_features\n"
        f"extract_features('dino', 'cub-parts', 'retrieval', checkpoint=Path({str(ckpt)!r}), arch={ARCH!r},"
        f" data_root=Path({str(cub)!r}), features_dir=Path({str(killed)!r}), device='cpu', batch_size=5,"
        f" num_workers=0, progress=False, shard_size={SHARD}, tokens=True,"
        " on_shard=lambda i: time.sleep(0.4))\n"  # slow enough to be caught between shards
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE)
    cache = cache_dir_for(killed, "dino", "cub-parts", "retrieval")
    deadline = time.monotonic() + 240
    shards: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        shards = sorted(cache.parent.glob(".retrieval.shards-*/shards/shard-*.safetensors"))
        if len(shards) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not cache.exists()  # nothing final was written
    done_before = sorted(p.name for p in cache.parent.glob(".retrieval.shards-*/shards/shard-*.safetensors"))
    assert 2 <= len(done_before) < 9

    computed: list[int] = []
    resumed = run_extract(
        "dino", "cub-parts", "retrieval", **{**_args(cub, ckpt, killed), "on_shard": computed.append}
    )
    assert resumed.status == "resumed" and resumed.shards_reused == len(done_before)
    assert resumed.shards_total == 9
    assert sorted(computed) == [i for i in range(9) if f"shard-{i:06d}.safetensors" not in done_before]
    assert not list(cache.parent.glob(".*"))  # shards folder removed after finalisation

    fresh = run_extract("dino", "cub-parts", "retrieval", **_args(cub, ckpt, tmp_path / "fresh"))
    assert fresh.status == "built" and fresh.shards_reused == 0
    got, want = _files(resumed.cache_dir), _files(fresh.cache_dir)
    assert sorted(got) == ["features.safetensors", "items.csv", "manifest.json", "stamps.json", "tokens.npy"]
    for name in want:
        assert got[name] == want[name], name


def _torchrun(cub: Path, ckpt: Path, features: Path, nproc: int) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", f"--nproc-per-node={nproc}", "-m", "partbench", "extract"]
    cmd += ["--model", "dino", "--dataset", "cub-parts", "--checkpoint", str(ckpt), "--arch", ARCH]
    cmd += ["--data-root", str(cub), "--features-dir", str(features), "--device", "cpu"]
    cmd += ["--num-workers", "0", "--batch-size", "5", "--shard-size", str(SHARD), "--tokens"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def test_torchrun_two_gloo_processes_write_the_single_process_cache(inputs, tmp_path: Path) -> None:
    cub, ckpt = inputs
    out = _torchrun(cub, ckpt, tmp_path / "ddp", nproc=2)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("built: ") == 1  # rank 0 alone reports
    torch.set_num_threads(1)  # the same intra-op threads as each torchrun rank
    single = run_extract("dino", "cub-parts", "retrieval", **_args(cub, ckpt, tmp_path / "single"))
    ddp = cache_dir_for(tmp_path / "ddp", "dino", "cub-parts", "retrieval")
    a, b = load_features(ddp), load_features(single.cache_dir)
    assert a.cache_key == b.cache_key
    for name in ("embedding", "cls_token", "projection", "labels"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.tokens == b.tokens).all()
    assert _files(ddp) == _files(single.cache_dir)
    assert not list(ddp.parent.glob(".*"))


def _gather_worker(rank: int, world: int, port: int, base: str) -> None:
    import torch.distributed as dist

    from partbench import distributed as D

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    ctx = D.init_from_env("cpu")
    mine = Path(base) / f"host{rank}"  # no shared file system: each rank has its own folder
    mine.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        if ctx.owns(i):
            (mine / f"{i}.bin").write_bytes(f"shard {i} from rank {rank}".encode() * (i + 1))
    D.gather_shards(ctx, 5, lambda i: mine / f"{i}.bin", lambda i: (mine / f"{i}.bin").is_file())
    assert D.all_ok(ctx, True) and not D.all_ok(ctx, rank == 0)
    dist.destroy_process_group()


def test_gather_shards_brings_every_shard_to_rank_0_without_a_shared_disk(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = (2, port, str(tmp_path))
    mp.start_processes(_gather_worker, args=args, nprocs=2, join=True, start_method="fork")
    got = {p.name: p.read_bytes() for p in sorted((tmp_path / "host0").iterdir())}
    owner = {i: i % 2 for i in range(5)}
    assert got == {f"{i}.bin": f"shard {i} from rank {owner[i]}".encode() * (i + 1) for i in range(5)}
    assert sorted(p.name for p in (tmp_path / "host1").iterdir()) == ["1.bin", "3.bin"]
