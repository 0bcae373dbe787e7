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


@pytest.fixture
def attention_backend():
    """``register(fn) -> name``: a test's own attention function as a transformers backend (masks built as for
    eager), removed again when the test ends."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    names = []

    def register(function, name=None):
        name = name or f"futuremask_test_{len(names)}_{function.__name__}"
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
        names.append(name)
        return name

    yield register
    for name in names:
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)
