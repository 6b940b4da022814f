"""mmdistill: ``pip install .`` (or a wheel); ``[det]`` / ``[seg]`` / ``[cls]`` / ``[all]`` add the
OpenMMLab libraries of the tasks, in the ranges of ``mmdistill/version.py``.

mmcv is not among them: it has no wheel for current torch, and tools/install_deps.sh builds it
(with its ops) from its sdist. The exact versions CI tests: requirements/ci-constraints.txt.

Configs and tools travel inside the package, as OpenMMLab's libraries ship them, in
``mmdistill/.mim/`` (what ``mim train/test/run/search`` and mmengine's ``mmdistill::`` paths
read): copied into wheels and sdists by ``build_py``, symlinked into the source tree by
editable installs.
"""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))
# what goes into mmdistill/.mim: the configs, model-index.yml, and the tools that run on an
# installed package alone (the study, demo and benchmarks import tools/experiments: not shipped)
MIM_FILES = ['model-index.yml']
MIM_DIRS = ['configs']
MIM_TOOLS = ['train.py', 'test.py', 'export_student.py', 'dist_train.sh', 'dist_test.sh',
             'slurm_train.sh', 'analysis/feature_similarity.py',
             'analysis/visualize_features.py']


def read_version_file() -> dict:
    """``__version__`` and the supported ranges of mmdistill/version.py, without importing
    the package (its dependencies need not be installed yet)."""
    namespace: dict = {}
    with open(osp.join(ROOT, 'mmdistill', 'version.py')) as f:
        exec(compile(f.read(), 'mmdistill/version.py', 'exec'), namespace)
    return namespace


def mim_sources() -> list[tuple[str, str]]:
    """(source path, path under mmdistill/.mim) of every shipped file."""
    pairs = [(osp.join(ROOT, name), name) for name in MIM_FILES]
    for folder in MIM_DIRS:
        for dirpath, _, files in os.walk(osp.join(ROOT, folder)):
            for name in sorted(files):
                path = osp.join(dirpath, name)
                pairs.append((path, osp.relpath(path, ROOT)))
    pairs += [(osp.join(ROOT, 'tools', name), osp.join('tools', name)) for name in MIM_TOOLS]
    return pairs


def link_mim_in_source() -> None:
    """An editable install: ``mmdistill/.mim/{configs,tools,model-index.yml}`` as symlinks to the
    repository's own (edits show at once; the folder is git-ignored)."""
    mim = osp.join(ROOT, 'mmdistill', '.mim')
    os.makedirs(mim, exist_ok=True)
    for name in MIM_FILES + MIM_DIRS + ['tools']:
        link = osp.join(mim, name)
        if osp.islink(link) or osp.isfile(link):
            os.remove(link)
        elif osp.isdir(link):
            shutil.rmtree(link)
        os.symlink(osp.relpath(osp.join(ROOT, name), mim), link)


class BuildPyWithMim(build_py):
    """build_py that also copies the configs, tools and model index into ``mmdistill/.mim`` of
    the build (so wheels hold them)."""

    def run(self) -> None:
        super().run()
        for source, target in mim_sources():
            dest = osp.join(self.build_lib, 'mmdistill', '.mim', target)
            os.makedirs(osp.dirname(dest), exist_ok=True)
            shutil.copyfile(source, dest)
            if source.endswith('.sh'):
                os.chmod(dest, 0o755)


def requirement_lists(info: dict) -> tuple[list[str], dict[str, list[str]]]:
    """install_requires and extras from the ranges of mmdistill/version.py."""
    install = [f'{name}{spec}' for name, spec in info['REQUIRED'].items()] + ['tqdm']
    extras_deps = {'det': ['pycocotools'], 'seg': ['ftfy', 'regex'], 'cls': []}
    extras = {}
    for name, (_, extra, spec) in info['OPTIONAL'].items():
        extras[extra] = [f'{name}{spec}'] + extras_deps[extra]
    extras['all'] = sorted({req for reqs in extras.values() for req in reqs})
    return install, extras


if any(cmd in sys.argv for cmd in ('develop', 'editable_wheel')):
    link_mim_in_source()

INFO = read_version_file()
INSTALL_REQUIRES, EXTRAS = requirement_lists(INFO)
with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
    LONG_DESCRIPTION = f.read()

setup(
    name='mmdistill',
    version=INFO['__version__'],
    description='Knowledge distillation for the OpenMMLab 2.x stack',
    long_description=LONG_DESCRIPTION,
    long_description_content_type='text/markdown',
    # the public repository (none is recorded in this clone: set it before publishing)
    url='https://github.com/mmdistill/mmdistill',
    license='Apache-2.0',
    keywords='knowledge distillation, OpenMMLab, mmdet, mmsegmentation, mmpretrain',
    classifiers=[
        'Development Status :: 4 - Beta',
        'Intended Audience :: Developers',
        'Intended Audience :: Science/Research',
        'License :: OSI Approved :: Apache Software License',
        'Operating System :: POSIX :: Linux',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.11',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    packages=find_packages(include=['mmdistill', 'mmdistill.*']),
    include_package_data=False,
    # the CPU kernels' sources, compiled on the user's machine on first use
    package_data={'mmdistill': ['losses/fast/*.cpp', 'losses/fast/*.h']},
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    cmdclass={'build_py': BuildPyWithMim},
    zip_safe=False,
)
