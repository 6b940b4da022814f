"""How similar are the student's features to the teacher's? Linear CKA per tap, on validation data.

    python tools/analysis/feature_similarity.py CONFIG [--checkpoint CKPT [CKPT ...]]
        [--taps TAP | STUDENT_TAP:TEACHER_TAP ...] [--num-batches 10] [--mode pixels|pool]
        [--out DIR] [--cfg-options k=v ...]

CONFIG is a distillation config (its teacher is loaded from its checkpoint). Each ``--checkpoint``
(a training checkpoint of the config, or none: the student as built) is measured; two of them
(e.g. before and after distillation) are drawn side by side. Taps default to those of the
config's loss entries; a tap that yields several maps (``neck``) gives one row per level. With
several teachers (``model.teachers``) a tap names its teacher: ``neck:neck@r101``.
``pixels``: every location of every image is an example (maps of the same size; C features);
``pool``: every image is one example, its maps averaged over space (also for maps of different
size). Prints a Markdown table, writes ``DIR/cka.png`` and ``DIR/cka.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmdistill  # noqa: F401
from mmdistill.analysis import LinearCKA
from mmdistill.analysis.features import build_distiller, paired_features, tap_pairs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint', nargs='+', default=[None])
    parser.add_argument('--taps', nargs='+')
    parser.add_argument('--num-batches', type=int, default=10)
    parser.add_argument('--mode', choices=['pixels', 'pool'], default='pixels')
    parser.add_argument('--out', default='work_dirs/feature_similarity')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def examples(x: torch.Tensor, mode: str, same_size: bool) -> torch.Tensor:
    """(N, C, H, W) -> rows of examples: (N*H*W, C) for pixels, (N, C) for pool."""
    if x.dim() != 4:
        return x.reshape(x.shape[0], -1)
    if mode == 'pool' or not same_size:
        return x.mean((2, 3))
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def measure(model, loader, pairs, num_batches: int, mode: str) -> dict[str, float]:
    scores: dict[str, LinearCKA] = {}
    with paired_features(model, pairs) as features:
        for i, batch in enumerate(loader):
            if i == num_batches:
                break
            for key, (fs, ft) in features(batch).items():
                same = fs.dim() == 4 and fs.shape[-2:] == ft.shape[-2:]
                scores.setdefault(key, LinearCKA()).update(examples(fs, mode, same),
                                                           examples(ft, mode, same))
    return {k: v.value() for k, v in scores.items()}


def plot(results: dict[str, dict[str, float]], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 3.6))
    width = 0.8 / len(results)
    for k, (label, values) in enumerate(results.items()):
        xs = [i + (k - (len(results) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [values[n] for n in names], width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=30, ha='right', fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel('linear CKA (student, teacher)')
    ax.set_title('feature similarity to the teacher, per tap and level', fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    loader = Runner.build_dataloader(cfg.val_dataloader, seed=0)
    results = {}
    for ckpt in args.checkpoint:
        model = build_distiller(cfg, ckpt)
        label = 'as built' if ckpt is None else \
            osp.join(osp.basename(osp.dirname(osp.abspath(ckpt))), osp.basename(ckpt))
        results[label] = measure(model, loader, tap_pairs(model, args.taps), args.num_batches,
                                 args.mode)
    os.makedirs(args.out, exist_ok=True)
    names = list(next(iter(results.values())))
    print('| tap [level] | ' + ' | '.join(f'CKA, {label}' for label in results) + ' |')
    print('|---|' + '--:|' * len(results))
    for name in names:
        print(f'| {name} | ' + ' | '.join(f'{r[name]:.4f}' for r in results.values()) + ' |')
    with open(osp.join(args.out, 'cka.json'), 'w') as f:
        json.dump(dict(mode=args.mode, num_batches=args.num_batches, results=results), f,
                  indent=1)
    plot(results, osp.join(args.out, 'cka.png'))
    print(f'wrote {args.out}/cka.png, cka.json ({args.mode}, {args.num_batches} batches)')


if __name__ == '__main__':
    main()
