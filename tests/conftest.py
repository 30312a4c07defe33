import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LONGCTX_CACHE", str(Path(__file__).resolve().parents[1] / ".cache"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tok():
    from transformers import AutoTokenizer

    from longctx.models import smollm2_dir

    return AutoTokenizer.from_pretrained(smollm2_dir())


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    from longctx.data import moby_dick

    d = tmp_path_factory.mktemp("corpus")
    text = moby_dick()
    for i in range(3):
        (d / f"part{i}.txt").write_text(text[i * 6000 : (i + 1) * 6000])
    return d
