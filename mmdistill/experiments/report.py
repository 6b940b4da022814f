"""The study's outputs: a Markdown table per track and one PNG chart of all tracks."""
from __future__ import annotations

BASELINE_NAMES = {'alone': 'alone', 'inherit': 'inherit only'}


def _fmt(value, digits: int = 2) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def _pm(std: float | None) -> str:
    """' ± std', or nothing for a single seed."""
    return '' if std is None else f' ± {std:.2f}'


def track_markdown(track: dict) -> str:
    """One track: setting, teacher, then a row per method with mean ± std over the seeds, the
    paired difference to its baseline (mean ± std, wins out of seeds) and the loss balance."""
    label = track['metric_label']
    rows = track['rows']
    n_seeds = len(rows[0]['seeds']) if rows else 0
    lines = [f'**{track["title"]}.** {track["setting"]}; teacher {track["teacher_iters"]} '
             f'iterations ({label} {track["teacher"]["value"]:.2f}), students '
             f'{track["student_iters"]} iterations, seeds {rows[0]["seeds"] if rows else []}.',
             '',
             f'| method | {label} per seed | mean ± std | baseline | paired Δ (mean ± std) '
             f'| Δ > 0 | distill / task loss | grad share | cos(g, g_task) | s / run |',
             '|---|---|--:|---|--:|--:|--:|--:|--:|--:|']
    for r in rows:
        per_seed = ' / '.join(f'{v:.2f}' for v in r['values'])
        if 'delta_mean' in r:
            delta = f'{r["delta_mean"]:+.2f}' + _pm(r['delta_std'])
            wins = f'{r["wins"]}/{len(r["delta"])}'
            base = BASELINE_NAMES[r['baseline']]
        else:
            delta, wins, base = '-', '-', '-'
        lines.append(f'| {r["label"]} | {per_seed} | {r["mean"]:.2f}{_pm(r["std"])} | {base} '
                     f'| {delta} | {wins} | {_fmt(r["ratio"], 3)} | {_fmt(r["grad_share"], 3)} '
                     f'| {_fmt(r["grad_cos"], 3)} | {r["seconds"]:.0f} |')
    if n_seeds:
        seeds = f'{n_seeds} seed' + ('s' if n_seeds > 1 else '')
        lines += ['', f'Δ: the method minus its baseline on the same seed (same initial student '
                  f'weights, same data order), over {seeds}. distill / task loss: the '
                  'weighted distillation loss over the student\'s own loss, mean over the '
                  'steps; grad share: its part of the gradient step, <g_distill, g> / |g|^2; '
                  'cos: between the distillation and the task gradients (DistillBalanceHook, '
                  'every tenth of the run).']
    return '\n'.join(lines)


def study_markdown(results: dict, command: str) -> str:
    parts = ['Made by:', '', '```bash', command, '```', '']
    for track in results['tracks']:
        parts += [track_markdown(track), '']
    return '\n'.join(parts)


def plot_study(results: dict, path: str) -> str:
    """Per track: the methods' mean ± std with each seed as a dot and the baselines as lines
    (left), and the student-alone learning curve on training images (right)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tracks = results['tracks']
    fig, axes = plt.subplots(len(tracks), 2, figsize=(13, 3.6 * len(tracks)), squeeze=False,
                             gridspec_kw=dict(width_ratios=[2.2, 1]))
    colours = {None: '#888888', 'alone': '#1f77b4', 'inherit': '#d62728'}
    for (ax, ax_curve), track in zip(axes, tracks):
        rows = track['rows']
        xs = range(len(rows))
        for x, r in zip(xs, rows):
            colour = colours[r['baseline']] if r['key'] not in ('alone', 'inherit') else '#444444'
            ax.bar(x, r['mean'], yerr=r['std'], color=colour, alpha=0.55, capsize=3)
            ax.scatter([x] * len(r['values']), r['values'], color='black', s=10, zorder=3)
        for r in rows:
            if r['key'] in ('alone', 'inherit'):
                ax.axhline(r['mean'], ls='--', lw=1, color=colours[r['key'] if r['key'] ==
                                                                    'inherit' else 'alone'],
                           label=f'{r["label"]} (mean)')
        ax.axhline(track['teacher']['value'], ls=':', lw=1.2, color='#2ca02c',
                   label=f'teacher ({track["teacher"]["value"]:.1f})')
        ax.set_xticks(list(xs), [r['label'].replace(' (', '\n(') for r in rows], rotation=35,
                      ha='right', fontsize=7)
        ax.set_ylabel(track['metric_label'])
        ax.set_title(f'{track["title"]}: mean ± std, dots = seeds', fontsize=9)
        ax.legend(fontsize=7, loc='lower right')
        alone = next((r for r in rows if r['key'] == 'alone'), None)
        for seed, curve in (alone or {}).get('curves', {}).items():
            ax_curve.plot([p['iter'] for p in curve], [p['value'] for p in curve], marker='o',
                          ms=3, label=f'seed {seed}')
        ax_curve.set_xlabel('iteration')
        ax_curve.set_ylabel(f'{track["metric_label"]} on training images')
        ax_curve.set_title('student alone: learning curve', fontsize=9)
        if alone and alone.get('curves'):
            ax_curve.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
