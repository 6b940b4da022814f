"""The study's outputs: a Markdown table per track and one PNG chart of all tracks."""
from __future__ import annotations

BASELINE_NAMES = {'alone': 'alone', 'inherit': 'inherit only',
                  'inherit_self': 'inherit only (self-teacher)'}


def _fmt(value, digits: int = 2) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def _pm(std: float | None) -> str:
    """' ± std', or nothing for a single seed."""
    return '' if std is None else f' ± {std:.2f}'


def _delta(row: dict) -> str:
    """'+1.23 [-0.40, +2.86]': the mean paired difference and its 95 % interval."""
    if 'delta_mean' not in row:
        return '-'
    ci = row.get('delta_ci')
    return f'{row["delta_mean"]:+.2f}' + ('' if ci is None else f' [{ci[0]:+.2f}, {ci[1]:+.2f}]')


def _weights(row: dict) -> str:
    weights = row.get('auto_weights')
    return '-' if not weights else ', '.join(f'{v:.3g}' for v in weights.values())


def last_quarter_change(curve: list[dict], iters: int) -> float | None:
    """How much a learning curve (``[{iter, value}]``) changed over the last quarter of a
    schedule of ``iters`` iterations: the last value minus the one at 3/4 of it."""
    at = {p['iter']: p['value'] for p in curve}
    start = next((i for i in sorted(at) if i >= 0.75 * iters), None)
    if start is None or max(at) < iters or start == max(at):
        return None
    return at[max(at)] - at[start]


def curve_line(track: dict) -> str:
    """The plateau check of the student alone and the teacher, on training images."""
    alone = next((r for r in track['rows'] if r['key'] == 'alone'), None)
    changes = [last_quarter_change(c, track['student_iters'])
               for c in (alone or {}).get('curves', {}).values()]
    changes = [c for c in changes if c is not None]
    parts = []
    if changes:
        parts.append(f'student alone {sum(changes) / len(changes):+.2f} over the last quarter '
                     f'of its schedule (mean of {len(changes)} seeds)')
    for name, teacher in (track.get('teachers') or {}).items():
        change = last_quarter_change(teacher.get('curve') or [],
                                     teacher.get('iters', track['teacher_iters']))
        if change is not None:
            parts.append(f'{name} {change:+.2f} over its last quarter')
    label = track['metric_label']
    return (f'Learning curves ({label} on training images): ' + '; '.join(parts) + '.') \
        if parts else ''


def track_markdown(track: dict) -> str:
    """One track: setting, teacher, then a row per method with mean ± std over the seeds, the
    paired difference to its baseline (mean with its 95 % t interval, seeds won), the measured
    weight of the balanced rows and the loss balance."""
    label = track['metric_label']
    rows = track['rows']
    seeds = sorted({s for r in rows for s in r['seeds']})
    teachers = track.get('teachers') or dict(teacher=track['teacher'])
    named = {'teacher': 'teacher', 'self': 'self-teacher (the student\'s architecture)'}
    said = '; '.join(f'{named.get(n, n)} {t.get("iters", track["teacher_iters"])} iterations '
                     f'({label} {t["value"]:.2f})' for n, t in teachers.items())
    lines = [f'**{track["title"]}.** {track["setting"]}; {said}; students '
             f'{track["student_iters"]} iterations, seeds {seeds}.',
             '',
             f'| method | {label} per seed | mean ± std | baseline | paired Δ [95 % CI] '
             f'| Δ > 0 | balanced weight | distill / task loss | grad share | cos(g, g_task) '
             f'| s / run |',
             '|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|']
    for r in rows:
        per_seed = ' / '.join(f'{v:.2f}' for v in r['values'])
        if 'delta_mean' in r:
            wins = f'{r["wins"]}/{len(r["delta"])}'
            base = BASELINE_NAMES.get(r['baseline'], r['baseline'])
        else:
            wins, base = '-', '-'
        lines.append(f'| {r["label"]} | {per_seed} | {r["mean"]:.2f}{_pm(r["std"])} | {base} '
                     f'| {_delta(r)} | {wins} | {_weights(r)} | {_fmt(r["ratio"], 3)} '
                     f'| {_fmt(r["grad_share"], 3)} | {_fmt(r["grad_cos"], 3)} '
                     f'| {r["seconds"]:.0f} |')
    if seeds:
        lines += ['', 'Δ: the method minus its baseline on the same seed (same initial student '
                  'weights, same data order); the interval is the 95 % confidence interval of '
                  'its mean (Student\'s t, n - 1 degrees of freedom); Δ > 0: the seeds won. '
                  'balanced weight: the multiplier `auto_weight` measured (mean over seeds). '
                  'distill / task loss: the weighted distillation loss over the student\'s own '
                  'loss, mean over the steps; grad share: its part of the gradient step, '
                  '<g_distill, g> / |g|^2; cos: between the distillation and the task '
                  'gradients (DistillBalanceHook, every tenth of the run).']
    if curve_line(track):
        lines += ['', curve_line(track)]
    if seeds:
        lines += ['', time_line(track)]
    return '\n'.join(lines)


def time_line(track: dict) -> str:
    """The track's run time: every run's wall time summed (one thread a run)."""
    runs = sum(len(r['seeds']) for r in track['rows'])
    students = sum(r['seconds'] * len(r['seeds']) for r in track['rows'])
    teachers = sum(t.get('seconds', 0.0) for t in (track.get('teachers') or {}).values())
    return (f'Run time: {(students + teachers) / 3600:.1f} hours of one-thread runs '
            f'({runs} student runs {students / 3600:.1f} h, teachers {teachers / 3600:.1f} h).')


def study_markdown(results: dict, command: str) -> str:
    """Every track with the command that made it (``command`` for a track without one)."""
    parts = []
    for track in results['tracks']:
        parts += ['Made by:', '', '```bash', track.get('command', command), '```', '',
                  track_markdown(track), '']
    return '\n'.join(parts)


def _task_and_distill(track: dict, seed) -> tuple[set, dict]:
    """The task loss names (the student-alone run's) and each row's curves of that seed."""
    curves = {r['label']: r.get('losses', {}).get(seed) or r.get('losses', {}).get(str(seed))
              for r in track['rows']}
    alone = next((c for r, c in zip(track['rows'], curves.values()) if r['key'] == 'alone'), {})
    return {k for k in (alone or {}) if k != 'loss'}, curves


def _plot_losses(ax_task, ax_distill, track: dict) -> None:
    seed = track['rows'][0]['seeds'][0]
    task, curves = _task_and_distill(track, seed)
    for label, curve in curves.items():
        if not curve:
            continue
        iters = [p[0] for p in next(iter(curve.values()))]
        total_task = [sum(curve[k][i][1] for k in task if k in curve) for i in range(len(iters))]
        line, = ax_task.plot(iters, total_task, lw=1.2, label=label)
        distill = [k for k in curve if k != 'loss' and k not in task]
        if distill:
            ax_distill.plot(iters, [sum(curve[k][i][1] for k in distill)
                                    for i in range(len(iters))], lw=1.2, color=line.get_color(),
                            label=label)
    ax_task.set_title(f'student\'s own loss ({" + ".join(sorted(task))}), seed {seed}',
                      fontsize=9)
    ax_distill.set_title('weighted distillation loss', fontsize=9)
    for ax in (ax_task, ax_distill):
        ax.set_xlabel('iteration')
        ax.set_yscale('log')
        ax.legend(fontsize=7)


def plot_study(results: dict, path: str, losses: bool = False) -> str:
    """Per track: the methods' mean ± std with each seed as a dot and the baselines as lines
    (left), and the student-alone learning curve on training images (right); with ``losses``,
    below them the training losses of each run of the first seed (student's own, distillation).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tracks = results['tracks']
    per_track = 2 if losses else 1
    fig, axes = plt.subplots(per_track * len(tracks), 2,
                             figsize=(13, 3.6 * per_track * len(tracks)), squeeze=False,
                             gridspec_kw=dict(width_ratios=[2.2, 1] if not losses else [1, 1]))
    colours = {None: '#888888', 'alone': '#1f77b4', 'inherit': '#d62728'}
    for i, track in enumerate(tracks):
        ax, ax_curve = axes[per_track * i]
        if losses:
            _plot_losses(*axes[per_track * i + 1], track)
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
        for name, teacher in (track.get('teachers') or {}).items():
            if teacher.get('curve'):
                ax_curve.plot([p['iter'] for p in teacher['curve']],
                              [p['value'] for p in teacher['curve']], ls='--', marker='s', ms=3,
                              label=name if name != 'self' else 'self-teacher')
        ax_curve.set_xlabel('iteration')
        ax_curve.set_ylabel(f'{track["metric_label"]} on training images')
        ax_curve.set_title('learning curves: student alone, teachers', fontsize=9)
        if ax_curve.lines:
            ax_curve.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
