"""diffusers UNet2DModel -> Flax (jaxdiff.models.diffusers_unet, jaxdiff.hub) against the
PyTorch outputs stored by ``python -m benchmarks.diffusers_unet_fixtures``; no torch needed.

Agreement is float32 rounding: max |ours - torch| <= TOL * max |torch| with TOL = 2e-5
(measured: 2e-6 relative on CPU).
"""
import json
import pathlib
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import hub
from jaxdiff.models import diffusers_unet as du

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "diffusers_unet"
MODELS = ("cifar_like", "celeba_like", "pipeline_tiny")
TOL = 2e-5


def _nhwc(x):
    return np.transpose(np.asarray(x), (0, 2, 3, 1))


def _rel_err(ours, ref):
    ref = np.asarray(ref)
    return float(np.abs(np.asarray(ours, np.float64) - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def loaded():
    """name -> (model, params, reference arrays), loaded once per module."""
    out = {}
    for name in MODELS:
        model, params = hub.load_unet(FIXTURES / name)
        out[name] = (model, params, dict(np.load(FIXTURES / name / "reference.npz")))
    return out


@pytest.mark.parametrize("name", MODELS)
def test_outputs_equal_torch(loaded, name):
    model, params, ref = loaded[name]
    x = _nhwc(ref["x"])
    for t_key, out_key in (("t_float", "out_float"), ("t_int", "out_int")):
        t = ref[t_key].astype(np.float32)        # one compile for both timestep sets
        out, _ = du.apply_with_intermediates(model, params, x, t)
        assert out.shape == x.shape[:3] + (model.config.out_channels,)
        assert np.abs(ref[out_key]).max() > 0.5               # not a trivial output
        assert _rel_err(out, _nhwc(ref[out_key])) < TOL, (name, t_key)


def test_every_block_equals_torch(loaded):
    model, params, ref = loaded["cifar_like"]
    _, taps = du.apply_with_intermediates(model, params, _nhwc(ref["x"]), ref["t_float"])
    layers = {k[len("layer_"):] for k in ref if k.startswith("layer_")}
    assert set(taps) == layers and len(layers) == 10     # 3 down, mid, 3 up, 3 others
    for name, value in taps.items():
        stored = ref[f"layer_{name}"]
        stored = stored if stored.ndim == 2 else _nhwc(stored)
        assert value.shape == stored.shape, name
        assert _rel_err(value, stored) < TOL, name


def test_integer_and_scalar_timesteps(loaded):
    model, params, ref = loaded["pipeline_tiny"]
    out, _ = du.apply_with_intermediates(model, params, _nhwc(ref["x"]), ref["t_int"])
    assert ref["t_int"].dtype == np.int64 and _rel_err(out, _nhwc(ref["out_int"])) < TOL
    np.testing.assert_array_equal(du.batch_timesteps(517.25, 3), np.full(3, 517.25))
    np.testing.assert_array_equal(du.batch_timesteps(np.array([7]), 2), [7.0, 7.0])
    with pytest.raises(ValueError, match=r"t must be a scalar or of shape \(2,\), got \(3,\)"):
        du.batch_timesteps(np.zeros(3), 2)


def test_fractional_timesteps_interpolate_the_embedding():
    t = jnp.array([0.0, 3.0, 517.25, 999.0])
    emb = np.asarray(du.timestep_embedding(t, 8, flip_sin_to_cos=False, freq_shift=1))
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 3.0)          # half - freq_shift = 3
    arg = np.asarray(t, np.float64)[:, None] * freqs
    np.testing.assert_allclose(emb, np.concatenate([np.sin(arg), np.cos(arg)], 1), atol=2e-4)
    flipped = np.asarray(du.timestep_embedding(t, 9, flip_sin_to_cos=True, freq_shift=0))
    assert flipped.shape == (4, 9) and np.all(flipped[:, -1] == 0)           # odd: padded
    arg = np.asarray(t, np.float64)[:, None] * np.exp(-np.log(10000.0) * np.arange(4) / 4.0)
    np.testing.assert_allclose(flipped[:, :8], np.concatenate([np.cos(arg), np.sin(arg)], 1),
                               atol=2e-4)
    assert abs(flipped[2, 4] - np.sin(517.25)) < 2e-4                     # a fractional t


def test_eps_fn_layouts_and_learned_variance(loaded):
    model, params, ref = loaded["pipeline_tiny"]
    x, t = ref["x"], ref["t_float"]
    eps_nchw = du.make_eps_fn(model, params, layout="NCHW")(x, t)
    assert eps_nchw.shape == x.shape                     # 2 output channels: eps is the 1st
    assert _rel_err(eps_nchw, ref["out_float"][:, :1]) < TOL
    with pytest.raises(ValueError, match="layout='HWC'.*valid"):
        du.make_eps_fn(model, params, layout="HWC")


def test_jitted_eps_fn_traces_once_for_two_parameter_values(loaded):
    model, params, ref = loaded["pipeline_tiny"]
    traces = []

    @jax.jit
    def run(eps_fn, x, t):
        traces.append(1)
        return eps_fn(x, t)

    x, t = _nhwc(ref["x"]).astype(np.float64), ref["t_float"]        # NHWC, float64
    first = run(du.make_eps_fn(model, params), x, t)
    doubled = jax.tree.map(lambda p: 2.0 * p, params)
    second = run(du.make_eps_fn(model, doubled), x, t)
    assert len(traces) == 1
    assert first.dtype == np.float64 and first.shape == x.shape      # x's dtype and shape
    assert float(jnp.abs(first - second).max()) > 0.1
    assert _rel_err(first, _nhwc(ref["out_float"])[..., :1]) < TOL


def test_load_pipeline(loaded):
    pipe = hub.load_pipeline(FIXTURES / "pipeline_tiny", layout="NCHW")
    ref = loaded["pipeline_tiny"][2]
    assert pipe.scheduler.prediction_type == "epsilon"
    assert pipe.alphas_cumprod.shape == (1000,) and pipe.scheduler.num_train_timesteps == 1000
    np.testing.assert_allclose(pipe.alphas_cumprod, ref["alphas_cumprod"], rtol=1e-5)
    assert _rel_err(pipe.eps_fn(ref["x"], ref["t_float"]), ref["out_float"][:, :1]) < TOL


def test_flat_pipeline_folder(tmp_path):
    """Older hub repos keep the unet files and scheduler_config.json at the top."""
    src = FIXTURES / "pipeline_tiny"
    for f in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json",
              "unet/diffusion_pytorch_model.safetensors"):
        shutil.copy(src / f, tmp_path / pathlib.Path(f).name)
    model, params = hub.load_unet(tmp_path)
    assert model.config.resnet_time_scale_shift == "scale_shift"
    assert hub.load_scheduler(tmp_path).alphas_cumprod[0] == pytest.approx(1 - 1e-4)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2",
                                      "sigmoid"])
def test_alphas_cumprod_equal_diffusers(schedule):
    config = json.loads((FIXTURES / "schedules.json").read_text())[schedule]
    stored = np.load(FIXTURES / "schedules.npz")[schedule]   # diffusers, float32
    ours = hub.alphas_cumprod(dict(config, num_train_timesteps=1000))
    assert ours.dtype == np.float64 and ours.shape == (1000,)
    # diffusers multiplies in float32: < 1e-6 apart (1.3e-5 relative at alpha-bar 2e-9).
    np.testing.assert_allclose(ours, stored, rtol=3e-5, atol=0)
    assert np.abs(ours - stored).max() < 1e-6


def test_alphas_cumprod_closed_forms():
    ac = hub.alphas_cumprod({"beta_schedule": "linear"})       # diffusers' defaults
    beta1 = 1e-4 + (0.02 - 1e-4) / 999
    assert ac[0] == pytest.approx(1 - 1e-4, rel=1e-15)
    assert ac[1] == pytest.approx((1 - 1e-4) * (1 - beta1), rel=1e-15)
    assert ac[-1] == pytest.approx(4.035e-5, rel=1e-3)          # DDPM's alpha-bar_T
    scaled = hub.betas({"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                        "beta_end": 0.012, "num_train_timesteps": 10})
    np.testing.assert_allclose(np.sqrt(scaled), np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 10))
    # Cosine: the product telescopes to alpha_bar((t + 1) / T) / alpha_bar(0) below the cap.
    cos = hub.alphas_cumprod({"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 50})
    f = lambda s: np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(cos[:-1], f(np.arange(1, 50) / 50) / f(0.0), rtol=1e-12)
    assert 1 - cos[-1] / cos[-2] == pytest.approx(0.999)          # the capped last beta
    trained = hub.alphas_cumprod({"trained_betas": [0.1, 0.5], "beta_schedule": "unused"})
    np.testing.assert_allclose(trained, [0.9, 0.45])


def test_scheduler_errors(tmp_path):
    with pytest.raises(ValueError, match="beta_schedule='cubic'.*linear"):
        hub.betas({"beta_schedule": "cubic"})
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        hub.betas({"rescale_betas_zero_snr": True})
    (tmp_path / "scheduler_config.json").write_text(json.dumps({"prediction_type": "x0"}))
    with pytest.raises(ValueError, match="prediction_type='x0'.*epsilon"):
        hub.load_scheduler(tmp_path)
    shutil.copytree(FIXTURES / "pipeline_tiny", tmp_path / "v", ignore=shutil.ignore_patterns(
        "*.safetensors"))
    path = tmp_path / "v" / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()),
                                    prediction_type="v_prediction")))
    with pytest.raises(ValueError, match="prediction_type='v_prediction'.*'epsilon'"):
        hub.load_pipeline(tmp_path / "v")


# --------------------------------------------------------------- strict weight loading


def _state_dict(name="pipeline_tiny"):
    return hub.load_state_dict(FIXTURES / name / ("unet" if name == "pipeline_tiny" else ""))


def test_missing_and_unexpected_keys_are_errors(loaded):
    model = loaded["pipeline_tiny"][0]
    state = _state_dict()
    gone = "mid_block.attentions.0.to_q.weight"
    with pytest.raises(ValueError, match=rf"missing keys \['{gone}'\], unexpected keys \[\]"):
        hub.to_flax_params(model, {k: v for k, v in state.items() if k != gone})
    extra = dict(state, **{"down_blocks.0.resnets.0.extra.weight": np.zeros(3)})
    with pytest.raises(ValueError, match=r"missing keys \[\], unexpected keys "
                                         r"\['down_blocks.0.resnets.0.extra.weight'\]"):
        hub.to_flax_params(model, extra)
    bad = dict(state, **{"conv_in.bias": np.zeros(5, np.float32)})
    with pytest.raises(ValueError, match=r"conv_in.bias: \(5,\).*expected \(8,\)"):
        hub.to_flax_params(model, bad)


def test_layout_conversion(loaded):
    model, params, _ = loaded["pipeline_tiny"]
    state = _state_dict()
    w = state["down_blocks.0.resnets.0.conv1.weight"]                  # OIHW
    np.testing.assert_array_equal(params["down_blocks_0"]["resnets_0"]["conv1"]["kernel"],
                                  np.transpose(w, (2, 3, 1, 0)))
    lin = state["time_embedding.linear_1.weight"]                       # (out, in)
    np.testing.assert_array_equal(params["time_embedding"]["linear_1"]["kernel"], lin.T)
    np.testing.assert_array_equal(params["up_blocks_1"]["attentions_0"]["to_out_0"]["bias"],
                                  state["up_blocks.1.attentions.0.to_out.0.bias"])
    np.testing.assert_array_equal(params["conv_norm_out"]["scale"], state["conv_norm_out.weight"])


def test_legacy_attention_names(loaded):
    model, params, _ = loaded["pipeline_tiny"]
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for k, v in _state_dict().items():
        for new, old in legacy.items():
            k = k.replace(f".{new}.", f".{old}.")
        renamed[k] = v
    assert "mid_block.attentions.0.proj_attn.weight" in renamed
    converted = hub.to_flax_params(model, renamed)
    jax.tree.map(np.testing.assert_array_equal, converted, params)


@pytest.mark.parametrize("name,params_m", [("ddpm_cifar10_32", 35.746307),
                                           ("ddpm_256", 113.673219)])
def test_full_size_ddpm_architectures_load_strictly(name, params_m):
    """The DDPM paper's CIFAR-10 and 256x256 networks: every PyTorch name and shape (from
    diffusers, stored without weights) maps onto our module; zero-stride arrays, no memory."""
    stored = json.loads((FIXTURES / "full_size_keys.json").read_text())[name]
    model = du.DiffusersUNet2D(du.UNet2DConfig.from_dict(stored["config"]))
    fake = {k: np.broadcast_to(np.float32(0), s) for k, s in stored["state_dict"].items()}
    flat = hub.check_state_dict(model, fake)
    assert len(flat) == len(fake)
    assert sum(v.size for v in flat.values()) / 1e6 == pytest.approx(params_m, abs=1e-6)


# ------------------------------------------------------------------- files and hub


def test_safetensors_reader(tmp_path):
    path = FIXTURES / "cifar_like" / "diffusion_pytorch_model.safetensors"
    ours = hub.read_safetensors(path)
    assert len(ours) == 268 and ours["conv_in.weight"].shape == (16, 3, 3, 3)
    st = pytest.importorskip("safetensors.numpy")
    theirs = st.load_file(path)
    assert set(theirs) == set(ours)
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k])
    # Other dtypes, written by hand in the documented format.
    arrays = {"h": np.arange(6, dtype=np.float16).reshape(2, 3),
              "b": np.array([1.5, -2.0], jnp.bfloat16), "i": np.array([7, -9], np.int64)}
    codes = {"h": "F16", "b": "BF16", "i": "I64"}
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for k, a in arrays.items():
        blob = a.tobytes()
        header[k] = {"dtype": codes[k], "shape": list(a.shape),
                     "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    head = json.dumps(header).encode()
    (tmp_path / "x.safetensors").write_bytes(len(head).to_bytes(8, "little") + head
                                             + b"".join(blobs))
    back = hub.read_safetensors(tmp_path / "x.safetensors")
    for k, a in arrays.items():
        assert back[k].dtype == a.dtype
        np.testing.assert_array_equal(back[k], a)
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "x.safetensors").read_bytes()[:-4])
    with pytest.raises(ValueError, match="'i' of shape \\(2,\\) does not fit"):
        hub.read_safetensors(tmp_path / "cut.safetensors")


def test_bin_weights_need_torch(tmp_path, monkeypatch):
    shutil.copy(FIXTURES / "celeba_like" / "config.json", tmp_path)
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="PyTorch pickle and reading it needs torch"):
        hub.load_unet(tmp_path)


def test_bin_weights_with_torch(tmp_path, loaded):
    torch = pytest.importorskip("torch")
    model, params, _ = loaded["pipeline_tiny"]
    shutil.copy(FIXTURES / "pipeline_tiny" / "unet" / "config.json", tmp_path)
    torch.save({k: torch.from_numpy(v.copy()) for k, v in _state_dict().items()},
               tmp_path / "diffusion_pytorch_model.bin")
    _, from_bin = hub.load_unet(tmp_path)
    jax.tree.map(np.testing.assert_array_equal, from_bin, params)


def test_hub_ids_download_or_explain(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def fake_download(repo_id, allow_patterns):
        calls.append((repo_id, tuple(allow_patterns)))
        shutil.copytree(FIXTURES / "pipeline_tiny", tmp_path / "snap", dirs_exist_ok=True)
        return str(tmp_path / "snap")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model, _ = hub.load_unet("someone/ddpm-tiny")
    assert model.config.in_channels == 1
    assert calls == [("someone/ddpm-tiny", ("*.json", "diffusion_pytorch_model.safetensors",
                                            "unet/diffusion_pytorch_model.safetensors"))]

    def offline(repo_id, allow_patterns):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(OSError, match="no route to host.*huggingface-cli download "
                                      "someone/ddpm-tiny --local-dir DIR"):
        hub.load_unet("someone/ddpm-tiny")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match="needs huggingface_hub"):
        hub.load_scheduler("someone/ddpm-tiny")
    with pytest.raises(FileNotFoundError, match="neither a folder nor a hub model id"):
        hub.load_unet(str(tmp_path / "missing" / "folder"))


# -------------------------------------------------------------------------- config


BASE = json.loads((FIXTURES / "cifar_like" / "config.json").read_text())


@pytest.mark.parametrize("key,value,match", [
    ("time_embedding_type", "fourier", r"time_embedding_type='fourier'.*\('positional',\)"),
    ("class_embed_type", "timestep", r"class_embed_type='timestep'.*\(None,\)"),
    ("num_class_embeds", 10, r"num_class_embeds=10.*\(None,\)"),
    ("downsample_type", "resnet", r"downsample_type='resnet'.*\('conv',\)"),
    ("upsample_type", "resnet", r"upsample_type='resnet'.*\('conv',\)"),
    ("act_fn", "gelu", r"act_fn='gelu'.*\('silu', 'swish'\)"),
    ("resnet_time_scale_shift", "spatial", r"resnet_time_scale_shift='spatial'.*'default'"),
    ("mid_block_type", "UNetMidBlock2DCrossAttn", r"mid_block_type=.*'UNetMidBlock2D', None"),
    ("down_block_types", ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
     r"down_block_types entries \['CrossAttnDownBlock2D'\].*'AttnDownBlock2D'"),
    ("up_block_types", ["UpBlock2D", "SkipUpBlock2D", "UpBlock2D"],
     r"up_block_types entries \['SkipUpBlock2D'\]"),
    ("block_out_channels", [16, 32], r"must have the same length"),
    ("norm_num_groups", 5, r"block_out_channels \[16, 32, 32\] are not divisible by "
                           r"norm_num_groups=5"),
    ("attention_head_dim", 64, r"attention_head_dim=64 must be None or an int in \[1, 32\]"),
    ("sample_size_typo", 16, r"unknown UNet2DModel config keys \['sample_size_typo'\]"),
    ("_class_name", "UNet2DConditionModel", r"_class_name 'UNet2DConditionModel'"),
])
def test_unsupported_configs_are_errors(key, value, match):
    with pytest.raises(ValueError, match=match):
        du.UNet2DConfig.from_dict(dict(BASE, **{key: value}))


def test_config_round_trip_and_input_checks(loaded):
    cfg = du.UNet2DConfig.from_dict(dict(BASE, down_block_types=[
        "UNetResDownBlock2D", "AttnDownBlock2D", "DownBlock2D"], dropout=0.1))
    assert cfg.down_block_types[0] == "DownBlock2D" and cfg.time_embed_dim == 64
    assert cfg.attention_channels == (32, 32, 32)      # one down, one up level, the mid block
    model, params, _ = loaded["pipeline_tiny"]
    with pytest.raises(ValueError, match=r"shape \(B, H, W, 1\) with H and W divisible by 2"):
        model.apply({"params": params}, jnp.zeros((1, 7, 8, 1)), jnp.zeros((1,)))


def test_vp_eps_wraps_the_loaded_pipeline(loaded):
    """D(x; sigma_t) = x - sigma_t eps(x / sqrt(sigma_t^2 + 1), t) at discrete levels t."""
    wrappers = pytest.importorskip("jaxdiff.wrappers")
    pipe = hub.load_pipeline(FIXTURES / "pipeline_tiny")
    denoise = wrappers.vp_eps(pipe.eps_fn, pipe.alphas_cumprod)
    # A pytree: the UNet parameters and the schedule are its leaves.
    assert len(jax.tree.leaves(denoise)) == len(jax.tree.leaves(pipe.params)) + 1
    t = np.array([10.0, 500.0])
    sigma = np.sqrt((1 - pipe.alphas_cumprod[[10, 500]]) / pipe.alphas_cumprod[[10, 500]])
    x = _nhwc(loaded["pipeline_tiny"][2]["x"]) * sigma[:, None, None, None]
    scaled = x / np.sqrt(sigma ** 2 + 1)[:, None, None, None]
    expected = x - sigma[:, None, None, None] * np.asarray(pipe.eps_fn(scaled, t), np.float64)
    np.testing.assert_allclose(denoise(x, sigma), expected, rtol=1e-4, atol=1e-4 * sigma.max())
