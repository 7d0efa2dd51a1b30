"""Checks moved out of 00_adapter's lesson flow: bad options fail loudly; GELU and a linear up-projection are one
argument away and start as the identity."""
import pytest
import torch

from vlsm_adapter.adapter import Adapter, _zero_up_projection


def test_bad_options_fail_loudly():
    with pytest.raises(ValueError, match="Unknown init"): Adapter(8, 4, init="xavier")
    with pytest.raises(ValueError, match="Unknown activation"): Adapter(8, 4, activation="swish")
    with pytest.raises(ValueError, match="positive"): Adapter(0, 4)


def test_zero_init_refuses_a_sigma_that_is_not_zero_at_zero():
    blk = Adapter(8, 4, out_activation=None)
    blk.out_act, blk.out_activation = torch.nn.Sigmoid(), "sigmoid"      # σ(0) = 0.5: no identity possible
    with pytest.raises(ValueError, match="identity only if"): _zero_up_projection(blk)


def test_gelu_and_linear_up_projection_start_as_identity():
    h = Adapter(768, 64, activation="gelu", out_activation=None, init="zero")
    assert isinstance(h.act, torch.nn.GELU) and isinstance(h.out_act, torch.nn.Identity)
    f = torch.randn(3, 768)
    with torch.no_grad(): assert torch.equal(h(f), f)
