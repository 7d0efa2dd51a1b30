"""Moved from nbs/02_placement.ipynb: bad options and mismatched batches are refused with messages that say why."""
import pytest, torch

from vlsm_adapter.clipseg import load_clipseg
from vlsm_adapter.model import VLSMAdapter, check_choice


@pytest.fixture(scope="module")
def tiny():
    return load_clipseg("tiny")


def test_check_choice_lowercases_and_refuses():
    assert check_choice("method", "Dense", ("shallow", "dense")) == "dense"
    with pytest.raises(ValueError, match="Unknown method 'deep'; allowed: 'shallow', 'dense'"):
        check_choice("method", "deep", ("shallow", "dense"))


def test_bad_options_are_refused(tiny):
    base, _ = tiny
    with pytest.raises(ValueError, match="Unknown method 'deep'; allowed: 'shallow', 'dense'"):
        VLSMAdapter(base, "deep", "vl")
    with pytest.raises(ValueError, match="Unknown variant 'lv'"):
        VLSMAdapter(base, "dense", "lv")
    with pytest.raises(ValueError, match="text_shallow"):
        VLSMAdapter(base, "shallow", "vl", text_shallow="sum")


def test_one_prompt_per_image(tiny):
    base, tok = tiny
    ids = tok(["a red circle", "a blue square"], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        VLSMAdapter(base, "dense", "v")(torch.randn(2, 3, 352, 352), ids.input_ids[:1])
    with pytest.raises(ValueError, match="forward needs pixel_values and input_ids"):
        VLSMAdapter(base, "dense", "v")(torch.randn(2, 3, 352, 352))
