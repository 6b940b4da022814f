import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), 'shared', 'data')


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def use_scope(name: str):
    """An autouse fixture running each test of a module in the default scope ``name``
    (test modules of several libraries share one process)."""
    @pytest.fixture(autouse=True)
    def _scope():
        from mmengine.registry import DefaultScope
        with DefaultScope.overwrite_default_scope(name):
            yield
    return _scope
