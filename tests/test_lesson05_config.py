"""05_train: TrainConfig and make_accelerator refusals (moved from the lesson; the lesson keeps the defaults)."""
import pytest
import torch

from vlsm_adapter.train import TrainConfig, make_accelerator


def test_folder_names_are_accepted_unknown_datasets_are_not():
    TrainConfig(dataset="isic")                                    # MedVLSM folder names are accepted too ...
    with pytest.raises(ValueError, match="isic2018"):
        TrainConfig(dataset="isic2018")                            # ... unknown names are not


@pytest.mark.parametrize("kw,msg", [(dict(method="lora"), "allowed: 'shallow', 'dense', 'e2e', 'decoder'"),
                                    (dict(variant="vlx"), "Unknown variant 'vlx'"),
                                    (dict(precision="fp8"), "Unknown precision")])
def test_bad_choices_name_the_allowed_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kw)


@pytest.mark.parametrize("kw,msg", [(dict(batch_size=0), "batch_size must be positive"),
                                    (dict(max_epochs=-1), "max_epochs must be positive"),
                                    (dict(image_size=100), "multiple of 16"),
                                    (dict(lr=0.0), "lr must be positive")])
def test_bad_numbers_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kw)


def test_resolved_defaults():
    c = TrainConfig(dataset="isic16", method="shallow", variant="VLC").resolved()
    assert (c.model, c.lr, c.variant, c.out_dir) == ("CIDAS/clipseg-rd64-refined", 3e-4, "vlc", "runs/isic16-shallow-vlc-seed42")
    assert (c.batch_size, c.image_size, c.max_epochs) == (32, 352, 200)
    g = TrainConfig().resolved()
    assert (g.model, g.lr, g.batch_size, g.image_size, g.max_epochs) == ("tiny-pretrained", 3e-3, 8, 160, 24)
    assert TrainConfig(dataset="synthetic").resolved().max_epochs == 15
    assert TrainConfig(method="e2e").resolved().variant is None                        # variants are for adapters
    assert TrainConfig(dataset="synthetic", method="decoder").resolved().lr == 1e-3     # 3e-3 is for dense adapters only
    assert TrainConfig(method="shallow").resolved().lr == 3e-4                          # shallow VL diverged at 3e-3 and 1e-3


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed on a CUDA GPU")
def test_fp16_needs_a_gpu():
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        make_accelerator("fp16", "dense")
