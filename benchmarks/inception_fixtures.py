"""Reference outputs of pytorch-fid's InceptionV3 for the Flax port's tests (no weights).

    python -m benchmarks.inception_fixtures --out=tests/fixtures/inception/reference.npz

Needs the ``bench`` extra (torch, torchvision, pytorch-fid) but no network: pytorch-fid's
model is built as usual (``InceptionV3([3], resize_input=True, normalize_input=True)``)
except that the weight download it starts is answered with
``jaxdiff.models.inception.random_state_dict(seed)`` (He-normal convs, BatchNorm
statistics near 0 / 1), loaded strictly by torch. The test regenerates the same state
dict from the seed, so no weight is stored.

Saved (images NHWC float32 in [0, 1]; torch runs NCHW, converted back):

- ``seed``, ``state_dict_checksum`` (sum of |w| per key, float64, in key order),
  ``state_dict_keys``;
- ``images_32`` (2, 32, 32, 3) RGB and ``images_64`` (1, 64, 64, 3) gray (equal
  channels), multiples of 1/255 (so uint8 / 255 reproduces them); their pool3 features
  ``features_32``, ``features_64`` (float32) and the same with the model and inputs in
  float64 (``features64_*``: how far torch's own float32 result is from exact);
- intermediate activations of ``images_32`` (forward hooks, NHWC) after Conv2d_4a_3x3,
  Mixed_5d, Mixed_6e and Mixed_7c: ``mean_<name>`` the per-channel spatial mean
  (2, C), ``sub_<name>`` a strided subsample ``[:, ::s, ::s, ::c]`` (strides
  ``sub_strides``);
- torch's ``F.interpolate(mode="bilinear", align_corners=False)`` of small cases:
  ``resize_in_<k>`` / ``resize_out_<k>`` for up-, down- and mixed scaling and the
  299 x 299 resize of ``images_32`` subsampled ``[:, ::7, ::7]`` (``resize299_sub``).
"""
from __future__ import annotations

import argparse
import os
from unittest import mock

import numpy as np

from jaxdiff.models.inception import random_state_dict

HOOKED = {"Conv2d_4a_3x3": ("blocks.1.1", 7, 16), "Mixed_5d": ("blocks.2.2", 4, 16),
          "Mixed_6e": ("blocks.2.7", 2, 32), "Mixed_7c": ("blocks.3.2", 1, 64)}
RESIZE_CASES = {"up": ((1, 6, 5, 3), (13, 11)), "down": ((1, 40, 50, 3), (17, 23)),
                "mixed": ((2, 9, 30, 3), (31, 8)), "same": ((1, 7, 7, 3), (7, 7))}


def build_model(state_dict):
    """pytorch-fid's FID InceptionV3 (block 3, resize and normalise on) with these weights."""
    import torch
    from pytorch_fid import inception as pfi

    tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: tensors):
        model = pfi.InceptionV3([3], resize_input=True, normalize_input=True)
    return model.eval()


def to_nchw(x):
    import torch
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def to_nhwc(t):
    return np.ascontiguousarray(np.transpose(t.detach().numpy(), (0, 2, 3, 1)))


def features(model, images, dtype):
    """(B, H, W, 3) numpy -> (B, 2048) pool3 features from the torch model in ``dtype``."""
    import torch
    with torch.no_grad():
        out = model.to(dtype)(to_nchw(images).to(dtype))[0]
    return out[:, :, 0, 0].numpy()


def hooked_activations(model, images):
    """{name: NHWC float32 activation} of the HOOKED modules for ``images``."""
    import torch
    modules = dict(model.named_modules())
    acts, handles = {}, []
    for name, (path, _, _) in HOOKED.items():
        cls = type(modules[path]).__name__
        expected = "BasicConv2d" if name.startswith("Conv2d") else "FIDInception"
        assert cls.startswith(expected), (name, path, cls)
        handles.append(modules[path].register_forward_hook(
            lambda mod, inp, out, name=name: acts.__setitem__(name, to_nhwc(out))))
    with torch.no_grad():
        model.float()(to_nchw(images))
    for h in handles:
        h.remove()
    return acts


def torch_resize(images, size):
    import torch.nn.functional as F
    return to_nhwc(F.interpolate(to_nchw(images), size=size, mode="bilinear",
                                 align_corners=False))


def _quantize(x):
    """Float array -> float32 multiples of 1/255 in [0, 1] (what uint8 / 255 gives)."""
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8).astype(np.float32) / 255.0


def make(seed: int) -> dict:
    import torch
    torch.set_num_threads(1)
    sd = random_state_dict(seed)
    model = build_model(sd)
    rng = np.random.default_rng(seed + 1)
    # 8-bit images (k / 255, as pytorch-fid reads PNGs): two RGB 32 x 32, one gray
    # 64 x 64 (three equal channels; the test feeds it as one channel).
    images_32 = _quantize(rng.uniform(0.2, 0.8, (2, 32, 32, 3))
                          + rng.normal(0, 0.15, (2, 32, 32, 3)))
    images_64 = np.repeat(_quantize(rng.uniform(0.0, 1.0, (1, 64, 64, 1))), 3, axis=-1)
    keys = sorted(sd)
    out = {"seed": np.int64(seed), "state_dict_keys": np.array(keys),
           "state_dict_checksum": np.array([np.abs(sd[k].astype(np.float64)).sum()
                                            for k in keys]),
           "images_32": images_32, "images_64": images_64}
    for name, imgs in (("32", images_32), ("64", images_64)):
        out[f"features_{name}"] = features(model, imgs, torch.float32)
        out[f"features64_{name}"] = features(model, imgs.astype(np.float64), torch.float64)
    acts = hooked_activations(model, images_32)
    strides = []
    for name, (_, s, c) in HOOKED.items():
        out[f"mean_{name}"] = acts[name].mean(axis=(1, 2))
        out[f"sub_{name}"] = acts[name][:, ::s, ::s, ::c]
        strides.append((s, c))
    out["sub_strides"] = np.array(strides)
    for k, (shape, size) in RESIZE_CASES.items():
        x = rng.uniform(0.0, 1.0, shape).astype(np.float32)
        out[f"resize_in_{k}"], out[f"resize_out_{k}"] = x, torch_resize(x, size)
    out["resize299_sub"] = torch_resize(images_32, (299, 299))[:, ::7, ::7]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/fixtures/inception/reference.npz")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = make(args.seed)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    np.savez_compressed(args.out, **data)
    f32, f64 = data["features_32"], data["features64_32"]
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KiB); features "
          f"|f| mean {np.abs(f32).mean():.3g}, torch float32 vs float64 max abs diff "
          f"{np.abs(f32 - f64).max():.3g}")
    for name in HOOKED:
        print(f"  {name}: mean activation {data['mean_' + name].mean():.3g}")


if __name__ == "__main__":
    main()
