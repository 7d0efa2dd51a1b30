"""Loading checks beside 01_clipseg's 'Under the hood: loading CLIPSeg': the error paths of `load_clipseg` and of the
packaged weights' loader, which the notebook only describes."""
import pytest
import torch
from safetensors.torch import save_file

from vlsm_adapter.clipseg import load_clipseg, tiny_config, _load_tiny_pretrained, TOKEN_EMBEDDING
from transformers import CLIPSegForImageSegmentation


def test_missing_and_empty_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"): load_clipseg("./no/such/folder")
    with pytest.raises(FileNotFoundError, match="no config.json"): load_clipseg(tmp_path)


def test_offline_models_are_eval_and_named_by_seed():
    m, tok = load_clipseg("tiny", seed=3)
    assert not m.training and m.config._name_or_path == "tiny:seed=3" and len(tok) == 49408
    assert load_clipseg("tiny-pretrained", seed=3)[0].config._name_or_path == "tiny-pretrained"   # always seed 0


def test_asset_loader_refuses_missing_and_mismatched_files(tmp_path):
    model = CLIPSegForImageSegmentation(tiny_config())
    with pytest.raises(FileNotFoundError, match="installed without its assets"): _load_tiny_pretrained(model, tmp_path / "x.safetensors")
    save_file({"decoder.film_mul.weight": model.decoder.film_mul.weight.detach().clone()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="does not match the tiny architecture"): _load_tiny_pretrained(model, tmp_path / "bad.safetensors")


def test_asset_loader_writes_the_stored_token_rows(tmp_path):
    model = CLIPSegForImageSegmentation(tiny_config())
    state = {n: p.detach().clone() for n, p in model.named_parameters() if n != TOKEN_EMBEDDING}
    state[TOKEN_EMBEDDING + ".rows"] = torch.tensor([5, 7])
    state[TOKEN_EMBEDDING + ".values"] = torch.ones(2, model.config.text_config.hidden_size)
    save_file(state, str(tmp_path / "ok.safetensors"))
    _load_tiny_pretrained(model, tmp_path / "ok.safetensors")
    emb = dict(model.named_parameters())[TOKEN_EMBEDDING]
    assert torch.equal(emb[[5, 7]], torch.ones(2, emb.shape[1])) and not torch.equal(emb[6], torch.ones(emb.shape[1]))
