"""The one place for device, precision, seeding, threads and distributed state."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

from lowres import LowresError


def install_hint(extra: str | None = None, *, reinstall: bool = False) -> str:
    """The command that adds ``extra`` to lowres (or, ``reinstall``, restores its files) the way lowres is installed
    here: a checkout, editable or on PYTHONPATH (``pip install -e``; git restores its files), a wheel file or a
    folder (its path, from pip's direct_url.json), or an index. For messages: ``pip install 'lowres[lm]'`` fails
    where lowres came from a checkout."""
    import json
    from importlib import metadata
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    checkout = root if (root / "pyproject.toml").is_file() else None
    url = ""
    if checkout is None:
        for dist in metadata.distributions(name="lowres"):
            try:
                url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
            except ValueError:
                url = ""
            if url:
                break
    return _install_command(extra, reinstall, checkout, url)


def _install_command(extra: str | None, reinstall: bool, checkout, url: str) -> str:
    """:func:`install_hint` for a ``checkout`` folder (or None) and pip's recorded ``url`` ("" from an index)."""
    from urllib.parse import unquote, urlparse

    suffix = f"[{extra}]" if extra else ""
    if checkout is not None:
        return f"git -C {checkout} checkout -- lowres" if reinstall else f'pip install -e "{checkout}{suffix}"'
    force = "--force-reinstall " if reinstall else ""
    where = unquote(urlparse(url).path) if url.startswith("file://") else ""
    if where.endswith(".whl"):
        return f'pip install {force}"lowres{suffix} @ {url}"'
    if where:  # installed (not editable) from a folder
        return f'pip install {force}"{where}{suffix}"'
    return f"pip install {force}'lowres{suffix}'"


def resolve_device(name: str = "auto"):
    """``auto`` → the local CUDA device when there is one, else CPU. ``cuda``/``cuda:N``/``cpu`` as asked."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", distributed().local_rank if distributed().enabled else 0)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LowresError(f"Unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LowresError(f"--device {name} asked for CUDA, but torch sees no CUDA device here. Use --device cpu.")
    if device.type not in ("cpu", "cuda"):
        raise LowresError(f"Device {name!r} is not supported: use auto, cpu, cuda or cuda:N.")
    return device


def autocast(device, precision: str = "auto"):
    """Mixed precision context: bf16 autocast on CUDA (``auto`` or ``bf16``), nothing on CPU or for ``fp32``."""
    import torch

    if precision not in ("auto", "bf16", "fp32"):
        raise LowresError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    if device.type == "cuda" and precision in ("auto", "bf16"):
        if not torch.cuda.is_bf16_supported():
            if precision == "bf16":
                raise LowresError("This GPU does not support bf16; use --set train.precision=fp32.")
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    """A seed that depends only on (seed, step): every training step draws its masks, dropout and layerdrop
    from it, so a resumed run takes exactly the random decisions an uninterrupted one would."""
    return (seed * 1_000_003 + step * 7919 + salt * 104_729) % (2**63 - 1)


def configure_threads(num_threads: int = 0) -> int:
    """Intra-op threads for this process (0 = all cores, divided among local distributed processes)."""
    import torch

    if num_threads <= 0:
        cores = os.cpu_count() or 1
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        num_threads = max(1, cores // max(1, local))
    torch.set_num_threads(num_threads)
    return num_threads


def worker_init(_worker_id: int) -> None:
    """DataLoader workers decode audio: one thread each, or they oversubscribe the cores and crawl."""
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@dataclass(frozen=True)
class Distributed:
    enabled: bool
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def distributed() -> Distributed:
    """What torchrun told this process (RANK, WORLD_SIZE, LOCAL_RANK), without initialising anything."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(False)
    return Distributed(True, int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device) -> Distributed:
    """Join the process group when launched by torchrun (nccl on CUDA, gloo on CPU)."""
    import torch.distributed as dist

    info = distributed()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            import torch

            torch.cuda.set_device(device)
        try:
            dist.init_process_group(backend=backend)
        except (RuntimeError, ValueError) as exc:
            raise LowresError(f"Could not join the torchrun process group ({backend}): {exc}. Check the "
                              "--nnodes / --rdzv-endpoint / --master-addr flags given to torchrun.") from None
    return info


def _group_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if _group_active() else 1


def is_main_process() -> bool:
    import torch.distributed as dist

    return not _group_active() or dist.get_rank() == 0


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all processes (the values themselves in a single process)."""
    if not _group_active():
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.cpu().tolist()


def barrier() -> None:
    if _group_active():
        import torch.distributed as dist

        dist.barrier()


def on_main(fn, *args, **kwargs):
    """Run ``fn`` on rank 0 only and hand its result to every rank. A LowresError raised there is raised on
    every rank (so no rank waits forever for one that gave up)."""
    if not _group_active():
        return fn(*args, **kwargs)
    import torch.distributed as dist

    box: list = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn(*args, **kwargs))
        except LowresError as exc:
            box[0] = ("error", str(exc))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise LowresError(value)
    return value

