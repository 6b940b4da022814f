"""Distributed set-up that works on CPUs (gloo) as well as GPUs (nccl)."""
from __future__ import annotations

import atexit
import os

import torch
from mmengine.config import Config


def setup_distributed(cfg: Config) -> None:
    """Prepare ``cfg`` for the launcher it names.

    On a machine without CUDA, mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device``
    and its DDP wrapper passes ``device_ids=[LOCAL_RANK]``; both fail. So with no CUDA device the
    gloo process group is initialised here, before the Runner, and the DDP wrapper is given
    ``device_ids=None``. ``DIST_BACKEND`` overrides the backend (nccl on GPUs, gloo on CPUs).
    """
    if cfg.get('launcher', 'none') == 'none':
        return
    backend = os.environ.get('DIST_BACKEND')
    if torch.cuda.is_available() and backend != 'gloo':
        if backend:
            cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = backend
        return
    import torch.distributed as dist
    if not dist.is_initialized():
        if cfg.launcher == 'slurm':
            _slurm_env()
        dist.init_process_group(backend='gloo')
        atexit.register(_shutdown)
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'


def _shutdown() -> None:
    """Leave the gloo group together and destroy it before the interpreter exits.

    Without it a rank that reaches the end while another still has gloo work (or the store,
    which rank 0 hosts, closes under it) can abort with "terminate called without an active
    exception" during teardown: seen in CI with two CPU ranks. The barrier is gloo's monitored
    one with a timeout, so a rank that exits on an error does not wait for the others for long.
    """
    from datetime import timedelta

    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        dist.monitored_barrier(timeout=timedelta(seconds=60))
    except RuntimeError:
        pass  # another rank failed or left: destroy ours anyway
    dist.destroy_process_group()


def _slurm_env() -> None:
    """Fill torch.distributed's variables from slurm's (as mmengine does for slurm)."""
    import subprocess
    proc_id = int(os.environ['SLURM_PROCID'])
    ntasks = int(os.environ['SLURM_NTASKS'])
    node_list = os.environ['SLURM_NODELIST']
    addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ.setdefault('MASTER_ADDR', addr)
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ['RANK'] = str(proc_id)
