from setuptools import find_packages, setup

setup(
    name='mmdistill',
    version='0.1.0',
    description='Knowledge distillation for the OpenMMLab 2.x stack',
    packages=find_packages(include=['mmdistill', 'mmdistill.*']),
    python_requires='>=3.10',
    install_requires=['mmengine>=0.10.0'],
)
