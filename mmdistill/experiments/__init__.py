"""Small, seeded experiments on real or synthetic data, run on the CPU.

``runtime`` holds what every experiment shares (an iteration-based runtime, train-then-test,
a seeded initial-weights file); ``shapes``, ``camvid`` and ``cifar`` build the models and configs
of the three tracks of ``tools/analysis/distill_study.py`` and the demo.
"""
from .runtime import iter_runtime, save_init, train_and_test

__all__ = ['iter_runtime', 'save_init', 'train_and_test']
