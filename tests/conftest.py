import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from lmms_futuremask.testing.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture
def fresh_compiler():
    """Compiled flex_attention kernels from an earlier test, at other shapes, make torch recompile with dynamic
    shapes, which its CPU code generator fails on (torch 2.14): each flex test starts from a clean compiler."""
    import torch

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
