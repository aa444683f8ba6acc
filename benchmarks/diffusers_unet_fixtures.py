"""Writes the diffusers UNet2DModel fixtures of tests/jaxdiff/test_diffusers_unet.py.

Needs the bench extra (torch, diffusers, safetensors); the tests themselves do not. Each
fixture is a small ``UNet2DModel`` with a fixed seed whose every parameter is perturbed
by Gaussian noise (so GroupNorm scales and biases are not the 1 / 0 of a fresh model),
saved by ``save_pretrained`` (config.json + diffusion_pytorch_model.safetensors), with
the PyTorch outputs on fixed inputs in ``reference.npz`` next to it:

- ``cifar_like``: google/ddpm-cifar10-32's layout scaled down (one attention level,
  downsample_padding 0, flip_sin_to_cos False, freq_shift 1, norm_eps 1e-6, one head of
  full width), plus the output of every block (forward hooks) for the per-layer test;
- ``celeba_like``: google/ddpm-celebahq-256's layout (attention at the second-lowest
  level) scaled down, with diffusers' defaults elsewhere (4-channel heads, padding 1,
  flip_sin_to_cos True, freq_shift 0) and center_input_sample;
- ``pipeline_tiny``: a ``DDPMPipeline`` folder (model_index.json, unet/, scheduler/)
  whose UNet has attention at the top level, scale_shift time conditioning, a mid-block
  scale factor, a custom time_embedding_dim and a learned-variance output
  (out_channels = 2 * in_channels); its reference.npz sits at the pipeline's top.

``schedules.npz`` holds ``DDPMScheduler(...).alphas_cumprod`` for each beta_schedule, and
``full_size_keys.json`` the config and the parameter names and shapes (no weights) of the
full-size DDPM CIFAR-10 and 256x256 networks, for the strict-loading test.

    python -m benchmarks.diffusers_unet_fixtures            # writes tests/fixtures/...
    python -m benchmarks.diffusers_unet_fixtures --out=/tmp/fixtures

reference.npz: ``x`` (B, C, H, W) inputs, ``t_float`` / ``t_int`` (B,) timesteps,
``out_float`` / ``out_int`` the model outputs (NCHW, float32), and for cifar_like
``layer_<name>`` the block outputs at ``t_float`` (NCHW; (B, E) for time_embedding).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "diffusers_unet"

CONFIGS = {
    "cifar_like": dict(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2, norm_num_groups=4, norm_eps=1e-6, attention_head_dim=None,
        downsample_padding=0, flip_sin_to_cos=False, freq_shift=1),
    "celeba_like": dict(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1, norm_num_groups=4, attention_head_dim=4, downsample_padding=1,
        flip_sin_to_cos=True, freq_shift=0, center_input_sample=True),
    "pipeline_tiny": dict(
        sample_size=8, in_channels=1, out_channels=2, block_out_channels=(8, 16),
        down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D"),
        layers_per_block=1, norm_num_groups=4, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", mid_block_scale_factor=math.sqrt(2.0),
        time_embedding_dim=24),
}
# The DDPM paper's networks (Ho et al. 2020, appendix B) as diffusers configs: CIFAR-10
# 32x32 (35.7M parameters) and CelebA-HQ / LSUN 256x256 (114M), in the layout of
# google/ddpm-cifar10-32 and google/ddpm-celebahq-256 / google/ddpm-church-256.
FULL_SIZE = {
    "ddpm_cifar10_32": dict(
        sample_size=32, block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2, norm_num_groups=32, norm_eps=1e-6, attention_head_dim=None,
        downsample_padding=0, flip_sin_to_cos=False, freq_shift=1),
    "ddpm_256": dict(
        sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512),
        down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        layers_per_block=2, norm_num_groups=32, norm_eps=1e-6, attention_head_dim=None,
        downsample_padding=0, flip_sin_to_cos=False, freq_shift=1),
}
SEEDS = {"cifar_like": 0, "celeba_like": 1, "pipeline_tiny": 2}
BATCH = 2
T_FLOAT = (3.0, 517.25)         # fractional timesteps: diffusers' Timesteps accept them
T_INT = (0, 999)
PERTURB = 0.05                  # std of the noise added to every parameter
SCHEDULES = {
    "linear": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    "scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "squaredcos_cap_v2": dict(beta_schedule="squaredcos_cap_v2"),
    "sigmoid": dict(beta_schedule="sigmoid", beta_start=1e-4, beta_end=0.02),
}


def build_unet(name: str):
    """The seeded, perturbed ``UNet2DModel`` of fixture ``name`` (eval mode)."""
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(SEEDS[name])
    model = UNet2DModel(**CONFIGS[name]).eval()
    gen = torch.Generator().manual_seed(100 + SEEDS[name])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(PERTURB * torch.randn(p.shape, generator=gen))
    return model


def _hook_block_outputs(model, store: dict):
    """Registers forward hooks storing each block's output (the map, not the skips)."""
    def hook(name):
        def fn(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            store[f"layer_{name}"] = out.detach().numpy().astype(np.float32)
        return fn

    handles = [model.conv_in.register_forward_hook(hook("conv_in")),
               model.time_embedding.register_forward_hook(hook("time_embedding")),
               model.mid_block.register_forward_hook(hook("mid_block")),
               model.conv_out.register_forward_hook(hook("conv_out"))]
    for i, block in enumerate(model.down_blocks):
        handles.append(block.register_forward_hook(hook(f"down_blocks_{i}")))
    for i, block in enumerate(model.up_blocks):
        handles.append(block.register_forward_hook(hook(f"up_blocks_{i}")))
    return handles


def reference_outputs(model, name: str, layers: bool = False) -> dict:
    """Fixed inputs and the model's outputs (and block outputs if ``layers``)."""
    import torch

    cfg = CONFIGS[name]
    size = cfg["sample_size"]
    gen = torch.Generator().manual_seed(200 + SEEDS[name])
    x = torch.randn(BATCH, cfg["in_channels"], size, size, generator=gen)
    t_float = torch.tensor(T_FLOAT, dtype=torch.float32)
    t_int = torch.tensor(T_INT, dtype=torch.long)
    out = {"x": x.numpy(), "t_float": t_float.numpy(), "t_int": t_int.numpy()}
    handles = _hook_block_outputs(model, out) if layers else []
    with torch.no_grad():
        out["out_float"] = model(x, t_float).sample.numpy()
        for h in handles:
            h.remove()
        out["out_int"] = model(x, t_int).sample.numpy()
    return out


def write_model(out_dir: Path, name: str, layers: bool = False) -> None:
    model = build_unet(name)
    model.save_pretrained(out_dir, safe_serialization=True)
    np.savez(out_dir / "reference.npz", **reference_outputs(model, name, layers))


def write_pipeline(out_dir: Path) -> None:
    from diffusers import DDPMPipeline, DDPMScheduler

    model = build_unet("pipeline_tiny")
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                              variance_type="learned_range", prediction_type="epsilon")
    DDPMPipeline(unet=model, scheduler=scheduler).save_pretrained(
        out_dir, safe_serialization=True)
    np.savez(out_dir / "reference.npz", **reference_outputs(model, "pipeline_tiny"),
             alphas_cumprod=scheduler.alphas_cumprod.numpy())


def write_schedules(path: Path) -> None:
    from diffusers import DDPMScheduler

    arrays = {}
    for key, kwargs in SCHEDULES.items():
        sched = DDPMScheduler(num_train_timesteps=1000, **kwargs)
        arrays[key] = sched.alphas_cumprod.numpy()
    np.savez(path, **arrays)
    (path.with_suffix(".json")).write_text(json.dumps(SCHEDULES, indent=1) + "\n")


def write_full_size_keys(path: Path) -> None:
    """PyTorch parameter names and shapes of the full-size DDPM architectures (no weights)."""
    import torch
    from diffusers import UNet2DModel

    out = {}
    for name, config in FULL_SIZE.items():
        with torch.device("meta"):           # shapes only: nothing is allocated
            model = UNet2DModel(**config)
        # "_use_default_values" is an unordered set: left out so that reruns are identical.
        config = {k: v for k, v in model.config.items() if k != "_use_default_values"}
        out[name] = {"config": config,
                     "state_dict": {k: list(v.shape) for k, v in model.state_dict().items()}}
    path.write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    import torch

    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in CONFIGS:            # only what this script writes is replaced
        if (args.out / name).exists():
            shutil.rmtree(args.out / name)
    write_model(args.out / "cifar_like", "cifar_like", layers=True)
    write_model(args.out / "celeba_like", "celeba_like")
    write_pipeline(args.out / "pipeline_tiny")
    write_schedules(args.out / "schedules.npz")
    write_full_size_keys(args.out / "full_size_keys.json")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
