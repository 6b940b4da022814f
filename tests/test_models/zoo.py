"""Shared steps of the stock-zoo tests (``test_zoo_{det,seg,cls}.py``): a stand-in teacher of the
student's architecture, and one checked distillation step."""
from __future__ import annotations

import copy

import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import Registry


def save_stand_in(registry: Registry, model_cfg, path: str, perturb: bool = True
                  ) -> torch.nn.Module:
    """Build ``model_cfg`` (seed 1), initialise it as the runner does, and save it to ``path``
    as a teacher checkpoint. ``perturb``: move every parameter by N(0, 0.02) noise, since a
    trained teacher is not at its init (ViT heads start at zero, and a teacher equal to the
    student gives zero logit losses)."""
    torch.manual_seed(1)
    stand_in = registry.build(copy.deepcopy(model_cfg))
    stand_in.init_weights()
    if perturb:
        with torch.no_grad():
            for p in stand_in.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    torch.save({'state_dict': stand_in.state_dict()}, path)
    return stand_in


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def checked_distill_step(model: torch.nn.Module, batch: dict, loss_keys, changed_prefix: str
                         ) -> dict:
    """One SGD training step of the distiller ``model`` on ``batch``; asserts that each entry of
    ``loss_keys`` gave a finite, positive loss, that the teacher has no gradient and is
    bit-identical, and that a student parameter under ``changed_prefix`` moved. Returns the
    step's log."""
    teacher_before, student_before = _state(model.teacher.model), _state(model.student)
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.01)))
    model.train()
    log = model.train_step(batch, optim)
    for key in loss_keys:
        assert torch.isfinite(log[f'loss_{key}']) and log[f'loss_{key}'] > 0, (key, log)
    assert all(p.grad is None for p in model.teacher.model.parameters())
    assert all(torch.equal(v, teacher_before[k])
               for k, v in model.teacher.model.state_dict().items())
    changed = [k for k, v in model.student.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, student_before[k])]
    assert any(k.startswith(changed_prefix) for k in changed), changed
    return log
