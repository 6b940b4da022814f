import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), 'shared', 'data')


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
