"""mmdistill: pip install .[det] / [seg] / [cls] / [all] adds the tested OpenMMLab libraries.

mmcv is not among them: it has no wheel for current torch, and tools/install_deps.sh builds it
(with its ops) from its sdist.
"""
from setuptools import find_packages, setup

# the versions CI tests against (tools/install_deps.sh installs the same)
EXTRAS = {
    'det': ['mmdet==3.3.0', 'pycocotools'],
    'seg': ['mmsegmentation==1.2.2', 'ftfy', 'regex'],
    'cls': ['mmpretrain==1.2.0'],
}
EXTRAS['all'] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name='mmdistill',
    version='0.1.0',
    description='Knowledge distillation for the OpenMMLab 2.x stack',
    packages=find_packages(include=['mmdistill', 'mmdistill.*']),
    python_requires='>=3.10',
    install_requires=['mmengine==0.10.7', 'numpy<2', 'tqdm'],
    extras_require=EXTRAS,
)
