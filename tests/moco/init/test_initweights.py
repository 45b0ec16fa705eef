"""--init files: each accepted layout converts exactly (our backbone's tensors equal the file's), the rest
is refused with one line naming the file; a hostile pickle is refused and its payload never runs."""

from __future__ import annotations

import pytest
import torch
import torchvision

from moco.config import MoCoConfig
from moco.export import save_random_encoder
from moco.init.weights import Network, init_network, load_init_weights, read_init_backbone
from moco.model import MoCo
from plumbing.errors import InputError
from tests.moco.init.official_layout import hostile_checkpoint, tiny_official_checkpoint


def tiny_moco() -> MoCo:
    return MoCo(MoCoConfig(arch="resnet18", dim=16, queue_size=32))


def assert_backbone_equals(model: MoCo, expected: dict[str, torch.Tensor]) -> None:
    for enc in (model.encoder_q, model.encoder_k):
        ours = enc.backbone.net.state_dict()
        assert set(ours) == set(expected)
        for k, v in expected.items():
            assert torch.equal(ours[k], v), k


@pytest.mark.parametrize("mlp", [True, False], ids=["v2-head", "v1-head"])
def test_official_moco_checkpoint_converts_exactly(tmp_path, mlp):
    path = tmp_path / "checkpoint_0199.pth.tar"
    state = tiny_official_checkpoint(path, mlp=mlp)
    q = {k.removeprefix("module.encoder_q."): v for k, v in state.items() if k.startswith("module.encoder_q.")}
    head = {k for k in q if k.startswith("fc.")}
    assert head == ({"fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"} if mlp else {"fc.weight", "fc.bias"})
    expected = {k: v for k, v in q.items() if k not in head}
    model = tiny_moco()
    load_init_weights(model, path)
    assert_backbone_equals(model, expected)  # encoder_q's tensors, to the bit; encoder_k starts equal to them
    k_file = state["module.encoder_k.conv1.weight"]
    assert not torch.equal(model.encoder_k.backbone.net.conv1.weight, k_file)  # the file's key encoder is not used
    assert init_network(str(path)) == Network("resnet18", "imagenet", 64)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_state_dict_converts_exactly(tmp_path, suffix):
    torch.manual_seed(3)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = tiny_moco()
    load_init_weights(model, path)
    assert_backbone_equals(model, {k: v for k, v in state.items() if not k.startswith("fc.")})


def test_our_exported_encoder_converts_exactly(tmp_path):
    save_random_encoder(tmp_path / "run", "resnet18", 32, dim=0, seed=5)
    from safetensors.torch import load_file

    file = load_file(str(tmp_path / "run" / "encoder.safetensors"))
    expected = {k.removeprefix("encoder.backbone.net."): v for k, v in file.items()}
    for source in (tmp_path / "run", tmp_path / "run" / "encoder.safetensors"):
        model = tiny_moco()
        load_init_weights(model, source)
        assert_backbone_equals(model, expected)


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    # positive control: the same kind of file does run its payload when unpickled without weights_only
    control_marker = tmp_path / "control-ran"
    hostile_checkpoint(tmp_path / "control.pth", control_marker)
    torch.load(tmp_path / "control.pth", weights_only=False)
    assert control_marker.exists()

    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth.tar"
    hostile_checkpoint(path, marker)
    with pytest.raises(InputError) as e:
        load_init_weights(tiny_moco(), path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "refused as unsafe" in msg and "\n" not in msg
    assert not marker.exists()


def test_a_pickled_module_is_refused_as_unsafe(tmp_path):
    path = tmp_path / "whole-model.pth"
    torch.save(torchvision.models.resnet18(), path)  # the whole nn.Module: needs its classes unpickled
    with pytest.raises(InputError, match="refused as unsafe"):
        read_init_backbone(path)


def test_damaged_and_foreign_files_are_refused_with_their_name(tmp_path):
    cut = tmp_path / "cut.pth.tar"
    tiny_official_checkpoint(tmp_path / "whole.pth.tar")
    cut.write_bytes((tmp_path / "whole.pth.tar").read_bytes()[:5000])
    other = tmp_path / "bert.pth"
    torch.save({"embeddings.word.weight": torch.zeros(4, 4)}, other)
    for path, reason in ((cut, "unreadable weights file"), (other, "no ResNet weights found")):
        with pytest.raises(InputError) as e:
            load_init_weights(tiny_moco(), path)
        assert str(e.value).startswith(str(path)) and reason in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="no weights file found"):
        load_init_weights(tiny_moco(), tmp_path / "missing.pth")


def test_weights_of_another_architecture_name_it(tmp_path):
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("layer4.")}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(InputError, match="not a resnet18 or resnet50 backbone"):
        load_init_weights(tiny_moco(), tmp_path / "partial.pth")


def test_our_training_checkpoint_converts_exactly(light_run):
    from moco.checkpoint import load_checkpoint

    path = light_run.result.out_dir / "checkpoint.pt"
    state = load_checkpoint(path)["model"]
    prefix = "encoder_q.backbone.net."
    model = tiny_moco()
    load_init_weights(model, path)
    assert_backbone_equals(model, {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})


def test_a_small_image_network_is_recognised_and_converts_exactly(tmp_path):
    save_random_encoder(tmp_path / "run", "resnet18", 32, dim=0, seed=2, stem="cifar", width=32)
    from safetensors.torch import load_file

    file = load_file(str(tmp_path / "run" / "encoder.safetensors"))
    assert init_network(str(tmp_path / "run")) == Network("resnet18", "cifar", 32)
    model = MoCo(MoCoConfig(arch="resnet18", stem="cifar", width=32, dim=16, queue_size=32))
    load_init_weights(model, tmp_path / "run")
    assert_backbone_equals(model, {k.removeprefix("encoder.backbone.net."): v for k, v in file.items()})
    with pytest.raises(
        InputError, match="holds a resnet18 .cifar stem, width 32., the run trains a resnet18 .imagenet"
    ):
        load_init_weights(tiny_moco(), tmp_path / "run")
