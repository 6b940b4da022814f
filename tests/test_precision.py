"""Precision by hardware: what ``teacher_autocast='auto'`` and ``--amp`` pick on a CPU with and
without native bf16 and on CUDA (the capability checks mocked), the log line of each choice, the
warning of an emulated explicit setting, and the choice following the device of the input."""
import logging

import pytest
import torch
from mmengine.config import Config

from mmdistill.engine import machine, optim, precision, runner
from mmdistill.engine.machine import machine_info, machine_line
from mmdistill.engine.precision import amp_optim_wrapper, native_dtypes, resolve_precision
from tests.utils import det_batch, save_teacher, tiny_retinanet

mmdet = pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401
from mmdistill.teacher import teacher as teacher_module  # noqa: E402

from tests.conftest import use_scope  # noqa: E402

_scope = use_scope('mmdet')
register_all_modules()

#: torch.cpu.get_capabilities() of three kinds of x86 CPU (the features that matter here)
AVX2_ONLY = {'avx2': True, 'avx512_f': False, 'avx512_bf16': False, 'amx_bf16': False}
AVX512_BF16 = {'avx2': True, 'avx512_f': True, 'avx512_bf16': True, 'amx_bf16': False}
AMX = {'avx2': True, 'avx512_f': True, 'avx512_bf16': True, 'amx_bf16': True,
       'amx_fp16': True}


def _fgd_loss_and_teacher_dtypes(model) -> tuple[torch.Tensor, list[torch.dtype]]:
    """One eval-mode loss of ``model`` on a detection batch: its FGD loss and the dtypes of the
    teacher's neck outputs."""
    dtypes = []
    model.teacher.model.neck.register_forward_hook(lambda m, i, o: dtypes.append(o[0].dtype))
    model.eval()
    data = model.data_preprocessor(det_batch(), True)
    with torch.no_grad():
        loss = model.loss(**data)['loss_fgd']
    return loss, dtypes


@pytest.fixture
def cpu_with(monkeypatch):
    """Make ``torch.cpu.get_capabilities()`` report the given features."""
    def mock(features: dict) -> None:
        monkeypatch.setattr(torch.cpu, 'get_capabilities', lambda: dict(features))
    return mock


@pytest.fixture
def cuda_with(monkeypatch):
    """A CUDA device (its bf16 support as given), as far as the precision checks look."""
    def mock(bf16: bool) -> None:
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported',
                            lambda including_emulation=True: bf16 or including_emulation)
        monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: 'Mock GPU')
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    return mock


@pytest.fixture
def logs(monkeypatch):
    """``(level, message)`` of every print_log of the teacher, the runner and the optimizer
    wrapper."""
    seen = []
    for module in (teacher_module, runner, optim):
        monkeypatch.setattr(module, 'print_log', lambda msg, logger=None, level=logging.INFO:
                            seen.append((level, msg)))
    return seen


@pytest.mark.parametrize('features,expected', [
    (AVX512_BF16, ('bf16', True)), (AMX, ('bf16', True)), (AVX2_ONLY, (None, False))])
def test_auto_on_cpus(cpu_with, features, expected):
    """bf16 + channels-last where the CPU has avx512_bf16 or amx_bf16; fp32 contiguous where it
    emulates bf16 (channels-last makes fp32 convolutions slower there)."""
    cpu_with(features)
    chosen = resolve_precision('auto', 'cpu')
    assert (chosen.autocast, chosen.channels_last) == expected
    assert not chosen.emulated
    if expected[0] is None:
        assert 'neither avx512_bf16 nor amx_bf16' in chosen.reason
        assert chosen.describe() == 'fp32'
    else:
        assert 'avx512_bf16' in chosen.reason and chosen.describe() == 'bf16 + channels-last'
    assert resolve_precision('auto', 'cpu', channels_last=True).channels_last


@pytest.mark.parametrize('bf16,expected', [(True, 'bf16'), (False, 'fp16')])
def test_auto_on_cuda(cuda_with, bf16, expected):
    """CUDA: bf16 where ``torch.cuda.is_bf16_supported(including_emulation=False)``, else fp16;
    channels-last either way."""
    cuda_with(bf16)
    chosen = resolve_precision('auto', 'cuda')
    assert (chosen.autocast, chosen.channels_last, chosen.emulated) == (expected, True, False)
    assert 'Mock GPU' in chosen.reason
    assert resolve_precision('bf16', 'cuda').emulated is not bf16


def test_explicit_and_none(cpu_with):
    """An explicit setting is honoured (emulated or not); None is fp32; other values fail."""
    cpu_with(AVX2_ONLY)
    bf16 = resolve_precision('bf16', 'cpu')
    assert (bf16.autocast, bf16.channels_last, bf16.emulated) == ('bf16', True, True)
    assert resolve_precision('fp16', 'cpu').emulated
    cpu_with(AMX)
    assert not resolve_precision('fp16', 'cpu').emulated
    assert resolve_precision(None, 'cpu') == resolve_precision(None, 'cpu', False)
    assert resolve_precision(None, 'cpu').describe() == 'fp32'
    assert resolve_precision('auto', 'mps').autocast is None and native_dtypes('mps') == ()
    with pytest.raises(ValueError, match="teacher_autocast must be one of.*'auto'"):
        resolve_precision('half', 'cpu')


def test_cpu_features_without_torch_capabilities(monkeypatch):
    """Without ``torch.cpu.get_capabilities`` the flags of /proc/cpuinfo stand in."""
    monkeypatch.delattr(torch.cpu, 'get_capabilities')
    features = machine.cpu_features()
    assert set(features) == set(machine.VECTOR_FLAGS)
    assert all(isinstance(v, bool) for v in features.values())


def test_machine_line_names_the_kernels_and_native_precisions(cpu_with):
    cpu_with(AVX2_ONLY)
    line = machine_line()
    assert 'avx2' in line and 'avx512_bf16' not in line
    assert f'torch kernels {torch.backends.cpu.get_cpu_capability()}' in line
    assert 'bf16 emulated, fp16 emulated' in line
    cpu_with(AMX)
    assert 'bf16 native, fp16 native' in machine_line()


def test_machine_line_names_the_gpu(cuda_with):
    cuda_with(False)
    line = machine_line(machine_info('cuda'))
    assert line.startswith('GPU Mock GPU (bf16 emulated, fp16 native), CPU ')


# ---------------------------------------------------------------------------- the teacher
@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('teacher') / 'teacher.pth')
    save_teacher(tiny_retinanet(base_channels=32, fpn_channels=64), path)
    return path


def build(teacher_ckpt, **kwargs):
    fgd = dict(type='FGDLoss', student='neck', teacher='neck', student_channels=32,
               teacher_channels=64, temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4,
               lambda_fgd=5e-6)
    return MODELS.build(dict(
        type='DistillDetector', student=tiny_retinanet(),
        teacher=dict(config=dict(model=tiny_retinanet(32, 64)), checkpoint=teacher_ckpt),
        distill_losses=dict(fgd=fgd), **kwargs))


def _is_channels_last(model) -> bool:
    weight = model.teacher.model.state_dict()['backbone.conv1.weight']
    return weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('features,expected', [(AVX512_BF16, 'bf16'), (AVX2_ONLY, None)])
def test_teacher_auto_resolves_at_build_and_logs_it(teacher_ckpt, cpu_with, logs, features,
                                                     expected):
    cpu_with(features)
    model = build(teacher_ckpt, teacher_autocast='auto')
    assert model.teacher.autocast == expected
    assert _is_channels_last(model) is (expected is not None)
    said = [m for level, m in logs if "teacher_autocast='auto' on cpu" in m]
    assert len(said) == 1 and logs[0][0] == logging.INFO
    assert said[0].startswith('model.teacher: ') and (expected or 'fp32') in said[0]
    loss, dtypes = _fgd_loss_and_teacher_dtypes(model)
    assert torch.isfinite(loss)
    assert dtypes == [torch.bfloat16 if expected else torch.float32]
    assert len(logs) == 1  # resolved once: the run on the same device says nothing more


def test_explicit_bf16_on_a_cpu_without_it_warns(teacher_ckpt, cpu_with, logs):
    cpu_with(AVX2_ONLY)
    model = build(teacher_ckpt, teacher_autocast='bf16')
    assert model.teacher.autocast == 'bf16' and _is_channels_last(model)
    assert len(logs) == 1 and logs[0][0] == logging.WARNING
    assert "teacher_autocast='bf16' on cpu" in logs[0][1] and 'emulated' in logs[0][1]
    cpu_with(AVX512_BF16)
    logs.clear()
    build(teacher_ckpt, teacher_autocast='bf16')
    build(teacher_ckpt)
    assert logs == []


def test_teacher_precision_follows_the_device_of_its_input(teacher_ckpt, cpu_with, cuda_with,
                                                           logs):
    """Built on a CPU that emulates bf16 ('auto': fp32), resolved again for CUDA (bf16 +
    channels-last), and back for an input on the CPU; each device type logged once."""
    cpu_with(AVX2_ONLY)
    model = build(teacher_ckpt, teacher_autocast='auto')
    teacher = model.teacher
    assert (teacher.device_type, teacher.autocast) == ('cpu', None)
    cuda_with(True)
    teacher.resolve('cuda')  # what run() does for the first input on a CUDA device
    assert (teacher.autocast, teacher.channels_last) == ('bf16', True)
    assert _is_channels_last(model)
    data = model.data_preprocessor(det_batch(), True)
    with teacher.recorder.recording():
        teacher.run(data['inputs'], data['data_samples'])  # an input on the CPU again
    assert (teacher.device_type, teacher.autocast, teacher.channels_last) == ('cpu', None, False)
    assert not _is_channels_last(model)
    assert [m.split(': ')[1] for _, m in logs] == [
        "teacher_autocast='auto' on cpu", "teacher_autocast='auto' on cuda"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_teacher_auto_on_cuda_after_building_on_the_cpu(teacher_ckpt):
    """The real move: built on the CPU, trained on CUDA; the teacher's taps arrive in the
    precision CUDA runs natively."""
    model = build(teacher_ckpt, teacher_autocast='auto').cuda()
    loss, dtypes = _fgd_loss_and_teacher_dtypes(model)
    expected = 'bf16' if torch.cuda.is_bf16_supported(including_emulation=False) else 'fp16'
    assert model.teacher.device_type == 'cuda' and model.teacher.autocast == expected
    assert dtypes == [precision.AUTOCAST_DTYPES[expected]] and torch.isfinite(loss)
    assert _is_channels_last(model)


# ---------------------------------------------------------------------------- --amp
def _amp_config(**model) -> Config:
    return Config(dict(model=dict(type='DistillDetector', **model), default_scope='mmdet',
                       optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01))))


def test_amp_on_a_cpu_without_bf16_keeps_fp32(cpu_with, logs):
    cpu_with(AVX2_ONLY)
    assert amp_optim_wrapper('cpu')[0] is None
    cfg = runner.use_amp(_amp_config())
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'
    assert 'student_channels_last' not in cfg.model
    assert cfg.model.teacher_autocast == 'auto'
    assert len(logs) == 1 and logs[0][0] == logging.WARNING
    assert logs[0][1].startswith('--amp: the student trains in fp32 (CPU ')


def test_amp_on_a_cpu_with_bf16(cpu_with, logs):
    cpu_with(AVX512_BF16)
    cfg = runner.use_amp(_amp_config(teacher_autocast=None))
    assert cfg.optim_wrapper.type == 'BF16OptimWrapper' and cfg.model.student_channels_last
    assert cfg.model.teacher_autocast is None  # the config's own choice
    assert 'BF16OptimWrapper (CPU ' in logs[0][1]


def test_amp_on_cuda(cuda_with, logs):
    cuda_with(False)
    cfg = runner.use_amp(_amp_config(teacher_autocast='bf16'))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.model.teacher_autocast == 'bf16'


def test_bf16_optim_wrapper_warns_where_bf16_is_emulated(cpu_with, logs):
    cpu_with(AVX2_ONLY)
    model = torch.nn.Linear(2, 2)
    wrapper = optim.BF16OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    for _ in range(2):
        with wrapper.optim_context(model):
            model(torch.ones(1, 2))
    assert len(logs) == 1 and logs[0][0] == logging.WARNING and 'emulated' in logs[0][1]
