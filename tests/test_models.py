"""The segmentation models: the selfie conversion proven against the TFLite interpreter, DRN's
checkpoint layout and strict loading, the resize used inside the graphs."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stac.models import MODELS, WeightsError, build_model
from stac.models import selfie
from stac.models.resize import interp_matrix, resize
from stac.models.tflite import TfliteError, TfliteNet
from stac.video import read_frames, sample_video


def _real_frames(size_hw, per_clip=3):
    h, w = size_hw
    for clip in ("bikes", "carphone", "bigbuckbunny"):
        for frame in read_frames(sample_video(clip), max_frames=per_clip):
            yield cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(x):
        interpreter.set_tensor(inp["index"], x[None])
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])[0, ..., 0]

    return run


# landscape is the default model. The square file's worst frame (bigbuckbunny) is 1.3e-4 from the
# interpreter, whose own output there is 1.1e-4 from a float64 evaluation of the same graph: the
# bound is the interpreter's float32 precision, not the conversion's.
@pytest.mark.parametrize("variant,tolerance", [("landscape", 1e-4), ("square", 2e-4)])
def test_selfie_conversion_matches_tflite_interpreter(variant, tolerance):
    name, _, size = selfie.FILES[variant]
    path = selfie.tflite_path(variant)
    net = TfliteNet(path.read_bytes()).eval()
    reference = _interpreter(path)
    worst, agreement = 0.0, []
    for x in _real_frames(size):
        expected = reference(x)
        with torch.no_grad():
            got = net(torch.from_numpy(x).permute(2, 0, 1)[None])[0, 0].numpy()
        worst = max(worst, float(np.abs(got - expected).max()))
        agreement.append(np.mean((got > 0.5) == (expected > 0.5)))
    assert worst <= tolerance
    assert min(agreement) >= 0.999


def test_selfie_model_logits_are_the_probability(carphone_frames):
    model = build_model("selfie")
    rgb = torch.from_numpy(carphone_frames[0]).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        logits = model(rgb)
        prob = model.net(resize(rgb / 255, model.native_size)).sigmoid()
    assert logits.shape == (1, 2, 144, 256)
    torch.testing.assert_close(torch.softmax(logits, 1)[:, 1:], prob, rtol=1e-4, atol=1e-6)  # float32 exp
    assert 0.2 < (logits.argmax(1) == 1).float().mean() < 0.6  # the man in the car, not the car


def test_selfie_runs_at_another_input_size(bikes_frames):
    model = build_model("selfie", net_size=(288, 512))
    with torch.no_grad():
        logits = model(torch.from_numpy(bikes_frames[0]).permute(2, 0, 1)[None].float())
    assert logits.shape == (1, 2, 288, 512)
    with pytest.raises(ValueError, match="multiples of 16"):
        build_model("selfie", net_size=(100, 256))


def test_selfie_fetch_replaces_a_corrupted_file(tmp_path, monkeypatch):
    monkeypatch.setenv("STAC_CACHE", str(tmp_path))
    folder = selfie.fetch()
    name, digest, _ = selfie.FILES["landscape"]
    (folder / name).write_bytes(b"not a model")
    assert selfie.fetch() == folder
    assert selfie.sha256((folder / name).read_bytes()) == digest
    assert "Apache License" in (folder / "NOTICE").read_text()


def test_tflite_converter_rejects_what_it_does_not_know(monkeypatch):
    with pytest.raises(TfliteError, match="not a TFLite model"):
        TfliteNet(b"\x00" * 64)
    data = selfie.tflite_path("landscape").read_bytes()
    monkeypatch.setattr("stac.models.tflite.SUPPORTED", {"CONV_2D", "DEQUANTIZE"})
    with pytest.raises(TfliteError, match=r"operator HARD_SWISH \(op 3\) is not supported"):
        TfliteNet(data)


def test_resize_matches_torch_bilinear():
    x = torch.rand(1, 3, 37, 50, dtype=torch.float64)
    up = F.interpolate(x, size=(74, 123), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resize(x, (74, 123)), up)
    down = F.interpolate(x, size=(9, 16), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(resize(x, (9, 16)), down)
    assert torch.allclose(interp_matrix(5, 40).sum(1), torch.ones(5))


def test_model_registry_and_descriptions():
    assert {"selfie", "drn_d_22", "drn_d_38", "tiny"} <= set(MODELS)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope")
    info = build_model("tiny").describe()
    assert info["name"] == "tiny" and info["classes"] == ["dark", "mid", "bright"]


@pytest.mark.parametrize("name,params", [("drn_d_22", 15_907_164), ("drn_d_38", 26_022_764)])
def test_drn_has_the_drnseg_layout(name, params):
    model = build_model(name)
    keys = list(model.state_dict())
    assert keys[0] == "base.0.0.weight"
    assert {"seg.weight", "seg.bias", "up.weight", "base.3.0.downsample.0.weight",
            "base.8.0.weight", "base.8.1.running_var"} <= set(keys)
    assert all(k.split(".")[0] in {"base", "seg", "up"} for k in keys)
    assert sum(v.numel() for v in model.state_dict().values()) == params
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 96) * 255)
    assert logits.shape == (1, 19, 64, 96)


def test_drn_strict_loading(tmp_path):
    source = build_model("drn_d_22", seed=5)
    state = {f"module.{k}": v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "dataparallel_old.pth")  # DataParallel prefix, torch<0.4 BN keys
    model = build_model("drn_d_22", weights=tmp_path / "dataparallel_old.pth")
    torch.testing.assert_close(model.seg.weight, source.seg.weight)

    torch.save(build_model("drn_d_38").state_dict(), tmp_path / "d38.pth")
    with pytest.raises(WeightsError, match=r"does not match the model: unexpected base\.3\.2\.conv1\.weight"):
        build_model("drn_d_22", weights=tmp_path / "d38.pth")

    wrong = dict(source.state_dict())
    wrong["seg.weight"] = torch.zeros(21, 512, 1, 1)
    torch.save(wrong, tmp_path / "voc.pth")
    with pytest.raises(WeightsError, match=r"seg.weight: checkpoint \(21, 512, 1, 1\) vs model \(19, 512, 1, 1\)"):
        build_model("drn_d_22", weights=tmp_path / "voc.pth")

    missing = dict(source.state_dict())
    del missing["up.weight"]
    torch.save({"state_dict": missing}, tmp_path / "wrapped.pth")
    with pytest.raises(WeightsError, match="missing up.weight"):
        build_model("drn_d_22", weights=tmp_path / "wrapped.pth")

    (tmp_path / "junk.pth").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="is not a torch checkpoint"):
        build_model("drn_d_22", weights=tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("drn_d_22", weights=tmp_path / "absent.pth")


def test_bisenet_has_coincheungs_layout_and_pooling_is_exact():
    from stac.models.bisenet import max_pool_3x3_s2, upsample2

    x = torch.randn(2, 5, 16, 24)
    assert torch.equal(max_pool_3x3_s2(x), F.max_pool2d(x, 3, 2, padding=1))
    assert torch.equal(upsample2(x), F.interpolate(x, scale_factor=2, mode="nearest"))
    model = build_model("bisenet_v1")
    keys = set(model.state_dict())
    assert {"cp.resnet.conv1.weight", "cp.resnet.layer2.0.downsample.1.running_var", "cp.arm16.conv_atten.weight",
            "cp.arm32.bn_atten.bias", "cp.conv_avg.conv.weight", "sp.conv_out.bn.weight", "ffm.convblk.conv.weight",
            "ffm.conv.weight", "ffm.bn.running_mean", "conv_out.conv_out.bias"} <= keys
    assert all(k.split(".")[0] in {"cp", "sp", "ffm", "conv_out"} for k in keys)
    assert sum(p.numel() for p in model.cp.resnet.parameters()) == 11_176_512  # ResNet-18 without its classifier
    with torch.no_grad():
        assert model(torch.rand(1, 3, 136, 200) * 255).shape == (1, 19, 136, 200)  # padded to 32 inside
    assert build_model("bisenet_v1_camvid").num_classes == 11


def test_bisenet_strict_loading_drops_only_the_auxiliary_heads(tmp_path):
    source = build_model("bisenet_v1_camvid", seed=3)
    state = dict(source.state_dict())
    for aux in ("conv_out16", "conv_out32"):  # what a CoinCheung/BiSeNet training checkpoint also holds
        state[f"{aux}.conv.conv.weight"] = torch.zeros(64, 128, 3, 3)
        state[f"{aux}.conv_out.weight"] = torch.zeros(11, 64, 1, 1)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "train.pth")
    model = build_model("bisenet_v1_camvid", weights=tmp_path / "train.pth")
    torch.testing.assert_close(model.conv_out.conv_out.bias, source.conv_out.conv_out.bias)
    state["conv_out17.conv_out.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"unexpected conv_out17\.conv_out\.weight"):
        build_model("bisenet_v1_camvid", weights=tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"conv_out\.conv_out\.weight: checkpoint \(11, 256, 1, 1\) vs model "
                                           r"\(19, 256, 1, 1\)"):
        build_model("bisenet_v1", weights=tmp_path / "train.pth")
