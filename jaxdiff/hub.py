"""Loading diffusers DDPM checkpoints (UNet2DModel + scheduler) into Flax, without torch.

    model, params = hub.load_unet("google/ddpm-cifar10-32")      # or a local folder
    sched = hub.load_scheduler("google/ddpm-cifar10-32")         # alphas_cumprod (T,)
    pipe = hub.load_pipeline("path/to/ddpm-cifar10-32")          # both, and eps_fn(x, t)
    eps = pipe.eps_fn(x, t)            # x (B, H, W, C) NHWC, t (B,) float timesteps

Accepted folders (the layouts ``DiffusionPipeline.from_pretrained`` reads):

- a model folder: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (or ``.bin``);
- a pipeline folder: ``model_index.json`` with ``unet/`` and ``scheduler/`` subfolders,
  or (older hub repos) the unet files and ``scheduler_config.json`` at its top level.

A string that is not an existing path but looks like ``owner/name`` is downloaded with
``huggingface_hub.snapshot_download`` (JSON files and the weights only).

Weights: safetensors files are read by a small reader of the documented format (an
8-byte little-endian header size, a JSON header of dtype / shape / byte offsets, the raw
little-endian data), so neither torch nor the safetensors package is needed. ``.bin``
files are pickled torch tensors and need torch (imported only then). The PyTorch names
map one to one onto the Flax tree of :class:`jaxdiff.models.diffusers_unet.DiffusersUNet2D`
(``a.resnets.0.conv1.weight`` -> ``a/resnets_0/conv1/kernel``); conv kernels go from
OIHW to HWIO, linear weights are transposed, GroupNorm weights become ``scale``. The
mapping is strict: a missing or unexpected key or a wrong shape is a ValueError listing
them. Attention weights saved under diffusers' pre-0.13 names (query, key, value,
proj_attn) are renamed as diffusers does.

Schedules: :func:`alphas_cumprod` computes ``prod_{s <= t} (1 - beta_s)`` in float64 from
a scheduler config as ``DDPMScheduler`` does (linear, scaled_linear, squaredcos_cap_v2,
sigmoid, or ``trained_betas``); diffusers multiplies in float32, less than 1e-6 away
(relative 1e-6 for linear, 1.3e-5 at the 2e-9 end of squaredcos_cap_v2).
"""
from __future__ import annotations

import json
import math
import pathlib
import re
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxdiff.models.diffusers_unet import DiffusersUNet2D, UNet2DConfig, make_eps_fn

__all__ = ["load_unet", "load_scheduler", "load_pipeline", "alphas_cumprod", "betas",
           "read_safetensors", "read_torch_bin", "load_state_dict", "to_flax_params",
           "check_state_dict", "resolve", "Scheduler", "Pipeline", "BETA_SCHEDULES",
           "PREDICTION_TYPES"]

WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": jnp.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
# Numbered PyTorch containers (ModuleList / Sequential): "resnets.0" is Flax "resnets_0".
_LISTS = ("down_blocks", "up_blocks", "resnets", "attentions", "downsamplers", "upsamplers",
          "to_out")
_LEGACY_ATTENTION = {"query": ("to_q",), "key": ("to_k",), "value": ("to_v",),
                     "proj_attn": ("to_out", "0")}


# ------------------------------------------------------------------------ folders


def _download(model_id: str) -> pathlib.Path:
    """Downloads the JSON files and weights of hub repo ``model_id``; returns the folder."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ImportError(
            f"{model_id!r} is not a local folder, and downloading it from the Hugging Face "
            "hub needs huggingface_hub (pip install huggingface_hub); or download the repo "
            "elsewhere and pass its folder") from e
    weights = [w for name in WEIGHTS for w in (name, f"unet/{name}")]
    try:
        folder = pathlib.Path(snapshot_download(
            model_id, allow_patterns=["*.json"] + weights[:2]))
        if not any((folder / w).is_file() for w in weights[:2]):
            folder = pathlib.Path(snapshot_download(
                model_id, allow_patterns=["*.json"] + weights[2:]))
    except Exception as e:  # network, authentication, unknown repo: all end here
        raise OSError(
            f"could not download {model_id!r} from the Hugging Face hub ({type(e).__name__}: "
            f"{e}). Offline? On a machine with network run `huggingface-cli download "
            f"{model_id} --local-dir DIR`, copy DIR here and pass its path") from e
    return folder


def resolve(path_or_model_id: str | pathlib.Path) -> pathlib.Path:
    """A local folder as is; a hub id ``owner/name`` that is not a path: downloaded."""
    path = pathlib.Path(path_or_model_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{str(path)!r} is a file; pass the folder holding config.json")
    if isinstance(path_or_model_id, str) and _REPO_ID.match(path_or_model_id):
        return _download(path_or_model_id)
    raise FileNotFoundError(f"{str(path_or_model_id)!r} is neither a folder nor a hub model "
                            "id like 'google/ddpm-cifar10-32'")


def _component(folder: pathlib.Path, sub: str, filename: str) -> pathlib.Path:
    """``folder/sub/filename`` in a pipeline folder, else ``folder/filename``."""
    for candidate in (folder / sub / filename, folder / filename):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {filename} in {str(folder)!r} or its {sub}/ subfolder")


def _read_json(path: pathlib.Path) -> dict:
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------ weights


def read_safetensors(path) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as numpy arrays (no torch needed).

    Raises a ValueError for a truncated file, an unknown dtype or inconsistent offsets.
    """
    data = pathlib.Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{str(path)!r} is not a safetensors file (only {len(data)} bytes)")
    size = int.from_bytes(data[:8], "little")
    if 8 + size > len(data):
        raise ValueError(f"{str(path)!r}: header of {size} bytes runs past the file end")
    header = json.loads(data[8:8 + size])
    base, out = 8 + size, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{str(path)!r}: tensor {name!r} has dtype {info['dtype']!r}; "
                             f"supported: {sorted(_SAFETENSORS_DTYPES)}")
        shape = tuple(info["shape"])
        begin, end = info["data_offsets"]
        count = math.prod(shape)
        if end - begin != count * np.dtype(dtype).itemsize or base + end > len(data):
            raise ValueError(f"{str(path)!r}: tensor {name!r} of shape {shape} does not fit "
                             f"its byte range [{begin}, {end})")
        out[name] = np.frombuffer(data, dtype, count, base + begin).reshape(shape).copy()
    return out


def read_torch_bin(path) -> dict[str, np.ndarray]:
    """A pickled PyTorch state dict (``.bin``) as float32 numpy arrays; needs torch."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{str(path)!r} is a PyTorch pickle and reading it needs torch "
                          "(pip install torch, or convert it to safetensors elsewhere)") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().to(torch.float32).numpy() for k, v in state.items()}


def load_state_dict(folder) -> dict[str, np.ndarray]:
    """The weights in a model folder: the safetensors file if present, else the .bin."""
    folder = pathlib.Path(folder)
    safetensors, bin_file = (folder / w for w in WEIGHTS)
    if safetensors.is_file():
        return read_safetensors(safetensors)
    if bin_file.is_file():
        return read_torch_bin(bin_file)
    sharded = sorted(p.name for p in folder.glob("diffusion_pytorch_model*.index.json"))
    extra = f" (sharded checkpoints {sharded} are not supported)" if sharded else ""
    raise FileNotFoundError(f"no {WEIGHTS[0]} or {WEIGHTS[1]} in {str(folder)!r}{extra}")


def _flax_key(torch_name: str) -> tuple[str, ...]:
    """``down_blocks.0.resnets.1.conv1.weight`` -> (down_blocks_0, resnets_1, conv1, weight).

    Legacy attention names are renamed first (``attentions.0.query`` -> ``to_q``).
    """
    parts = torch_name.split(".")
    if len(parts) >= 3 and parts[-2] in _LEGACY_ATTENTION and "attentions" in parts:
        parts = parts[:-2] + list(_LEGACY_ATTENTION[parts[-2]]) + parts[-1:]
    out: list[str] = []
    for part in parts:
        if part.isdigit() and out and out[-1] in _LISTS:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return tuple(out)


def _torch_name(flax_key: tuple[str, ...]) -> str:
    """Inverse of :func:`_flax_key` for a Flax parameter path (kernel/scale -> weight)."""
    parts = []
    for part in flax_key[:-1]:
        match = re.fullmatch(rf"({'|'.join(_LISTS)})_(\d+)", part)
        parts.append(f"{match[1]}.{match[2]}" if match else part)
    leaf = "bias" if flax_key[-1] == "bias" else "weight"
    return ".".join(parts + [leaf])


def _to_flax_array(key: tuple[str, ...], value: np.ndarray):
    """(Flax path, array) of one PyTorch tensor: OIHW -> HWIO, (out, in) -> (in, out)."""
    if key[-1] == "bias":
        return key, value
    if key[-1] != "weight":
        return key, value                       # not a parameter name: reported unexpected
    if value.ndim == 4:
        return key[:-1] + ("kernel",), np.transpose(value, (2, 3, 1, 0))
    if value.ndim == 2:
        return key[:-1] + ("kernel",), value.T
    return key[:-1] + ("scale",), value


def _expected_shapes(model: DiffusersUNet2D) -> dict[tuple[str, ...], tuple[int, ...]]:
    cfg = model.config
    side = 2 ** cfg.downsamplings
    x = jax.ShapeDtypeStruct((1, side, side, cfg.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)["params"]
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def check_state_dict(model: DiffusersUNet2D, state_dict: Mapping[str, Any]) -> dict:
    """The state dict in Flax layout, keyed by Flax path, after a strict check.

    Args:
      model: the :class:`DiffusersUNet2D` the weights are for.
      state_dict: PyTorch name -> array (numpy arrays, or anything ``np.asarray`` takes).

    Returns:
      {Flax path tuple: numpy array (HWIO kernels, (in, out) dense kernels)}; views of
      the inputs where possible (nothing is copied).

    Raises:
      ValueError: listing the missing and unexpected PyTorch names, or the tensors whose
        shape differs from the model's.
    """
    expected = _expected_shapes(model)
    converted = {name: _to_flax_array(_flax_key(name), np.asarray(v))
                 for name, v in state_dict.items()}
    flat = dict(converted.values())
    missing = sorted(_torch_name(k) for k in expected if k not in flat)
    unexpected = sorted(name for name, (k, _) in converted.items() if k not in expected)
    if missing or unexpected:
        raise ValueError(f"state dict does not match the UNet2DModel config: missing keys "
                         f"{missing}, unexpected keys {unexpected}")
    wrong = [f"{_torch_name(k)}: {v.shape} (Flax layout), expected {expected[k]}"
             for k, v in flat.items() if tuple(v.shape) != expected[k]]
    if wrong:
        raise ValueError(f"state dict shapes do not match the config: {wrong}")
    return flat


def to_flax_params(model: DiffusersUNet2D, state_dict: Mapping[str, Any],
                   dtype=jnp.float32) -> dict:
    """Flax params of ``model`` from a diffusers state dict, strictly (see
    :func:`check_state_dict` for the errors), as ``dtype`` arrays."""
    flat = check_state_dict(model, state_dict)
    return traverse_util.unflatten_dict({k: jnp.asarray(v, dtype) for k, v in flat.items()})


def load_unet(path_or_model_id, dtype=jnp.float32) -> tuple[DiffusersUNet2D, dict]:
    """``(model, params)`` of the UNet2DModel in a model or pipeline folder (or hub id).

    Args:
      path_or_model_id: a folder (model folder, or a pipeline folder with unet/), or a
        hub id such as "google/ddpm-cifar10-32" (downloaded when not a local path).
      dtype: dtype of the returned parameters.

    Returns:
      The :class:`DiffusersUNet2D` (NHWC) and its parameter pytree.
    """
    folder = resolve(path_or_model_id)
    config_path = _component(folder, "unet", "config.json")
    model = DiffusersUNet2D(UNet2DConfig.from_dict(_read_json(config_path)))
    return model, to_flax_params(model, load_state_dict(config_path.parent), dtype)


# ---------------------------------------------------------------------- schedules


def _alpha_bar_cosine(t):
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def betas(config: Mapping[str, Any]) -> np.ndarray:
    """(num_train_timesteps,) float64 betas of a diffusers scheduler config.

    Keys (diffusers' defaults): ``num_train_timesteps`` (1000), ``beta_start`` (1e-4),
    ``beta_end`` (0.02), ``beta_schedule`` ("linear"; also "scaled_linear" - linear in
    sqrt(beta) -, "squaredcos_cap_v2" - betas of the cosine alpha-bar, capped at 0.999 -,
    "sigmoid"), ``trained_betas`` (explicit betas, overriding the schedule).
    """
    num = int(config.get("num_train_timesteps", 1000))
    start = float(config.get("beta_start", 1e-4))
    end = float(config.get("beta_end", 0.02))
    schedule = config.get("beta_schedule", "linear")
    if config.get("rescale_betas_zero_snr", False):
        raise ValueError("rescale_betas_zero_snr=True is not supported (alpha-bar reaches 0: "
                         "an infinite noise level); valid: False")
    if config.get("trained_betas") is not None:
        return np.asarray(config["trained_betas"], np.float64)
    if schedule == "linear":
        return np.linspace(start, end, num, dtype=np.float64)
    if schedule == "scaled_linear":
        return np.linspace(start ** 0.5, end ** 0.5, num, dtype=np.float64) ** 2
    if schedule == "squaredcos_cap_v2":
        return np.array([min(1.0 - _alpha_bar_cosine((i + 1) / num) /
                             _alpha_bar_cosine(i / num), 0.999) for i in range(num)])
    if schedule == "sigmoid":
        return 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, num))) * (end - start) + start
    raise ValueError(f"beta_schedule={schedule!r} is not supported; valid: {BETA_SCHEDULES}")


def alphas_cumprod(config: Mapping[str, Any]) -> np.ndarray:
    """(num_train_timesteps,) float64 ``prod_{s <= t} (1 - beta_s)``, t = 0 .. T - 1."""
    return np.cumprod(1.0 - betas(config))


class Scheduler(NamedTuple):
    """What a VP wrapper needs from a diffusers scheduler config."""
    alphas_cumprod: np.ndarray     # (T,) float64
    prediction_type: str           # "epsilon", "v_prediction" or "sample"
    num_train_timesteps: int
    config: dict                   # the scheduler_config.json as read


def load_scheduler(path_or_model_id) -> Scheduler:
    """The training schedule in ``scheduler_config.json`` (a scheduler folder, a pipeline
    folder with scheduler/ or the file at its top, or a hub id)."""
    folder = resolve(path_or_model_id)
    config = _read_json(_component(folder, "scheduler", "scheduler_config.json"))
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={prediction!r} is not supported; "
                         f"valid: {PREDICTION_TYPES}")
    ac = alphas_cumprod(config)
    return Scheduler(ac, prediction, len(ac), config)


class Pipeline(NamedTuple):
    """A DDPM pipeline's noise predictor and schedule."""
    eps_fn: Any                    # eps_fn(x, t): a jax.tree_util.Partial (pytree)
    alphas_cumprod: np.ndarray     # (T,) float64
    model: DiffusersUNet2D
    params: dict
    scheduler: Scheduler


def load_pipeline(path_or_model_id, layout: str = "NHWC", dtype=jnp.float32) -> Pipeline:
    """UNet and scheduler of a DDPM pipeline folder (or hub id), with ``eps_fn(x, t)``.

    ``eps_fn`` takes images in ``layout`` ("NHWC" or "NCHW") and (B,) float timesteps
    in [0, T - 1], as ``jaxdiff.wrappers.vp_eps(eps_fn, alphas_cumprod)`` calls it.
    Raises a ValueError if the scheduler's prediction_type is not "epsilon".
    """
    folder = resolve(path_or_model_id)
    scheduler = load_scheduler(folder)
    if scheduler.prediction_type != "epsilon":
        raise ValueError(f"prediction_type={scheduler.prediction_type!r}: load_pipeline "
                         "returns an eps_fn, valid: 'epsilon' (use load_unet and "
                         "load_scheduler for other parameterisations)")
    model, params = load_unet(folder, dtype)
    return Pipeline(make_eps_fn(model, params, layout), scheduler.alphas_cumprod, model,
                    params, scheduler)
