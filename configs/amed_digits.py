"""AMED training on digits with an exact denoiser (no network, no data at training time).

    python -m jaxdiff.amed_train --config=configs/amed_digits.py --workdir=runs/amed_digits
    python -m jaxdiff.amed_train --config=configs/amed_digits.py:solver --workdir=runs/amed_solver
    python -m jaxdiff.amed_train --config=configs/amed_digits.py:noafs --workdir=runs/amed_noafs

Default: AMED-Plugin on iPNDM-4 (teacher iPNDM, 2 extra points per interval, polynomial
rho = 7, scale_dir 0.01, scale_time 0.2) as in the reference launch.sh; ``:solver`` is
AMED-Solver (teacher Heun, 1 extra point, time-uniform rho = 1). 10,240 noise trajectories
in batches of 128 (the reference's 10 kimg), about a minute per NFE on 2 CPU cores.
"""
import ml_collections

from jaxinfra import config_args


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.dataset = "digits"
    c.max_examples = 0              # 0: the whole data set
    c.denoiser = "gmm"              # gmm | optimal
    c.gmm_components = 20
    c.base = "ipndm"
    c.base_options = ml_collections.ConfigDict({"max_order": 4})
    c.teacher = "ipndm"
    c.teacher_points = 2
    c.schedule = "polynomial"
    c.schedule_kw = ml_collections.ConfigDict({"rho": 7.0})
    c.afs = True                    # the reference's default; even NFE only without it
    c.afs_mean = "zero"             # AFS's D(x; 80): zero (reference) | data | denoiser
    c.nfes = (3, 5, 7, 9)
    c.num_trajectories = 10_240
    c.batch_size = 128
    c.learning_rate = 5e-3
    c.objective = "stepwise"        # stepwise (reference) | trajectory | final
    c.scale_dir = 0.01
    c.scale_time = 0.2
    c.num_eval = 256
    c.reference_steps = 513
    c.seed = 0
    args = config_args.parse(arg, flags=("solver", "noafs", "tiny")).flags
    if "solver" in args:
        c.base, c.teacher, c.teacher_points = "amed", "heun", 1
        c.base_options = ml_collections.ConfigDict({})
        c.schedule, c.schedule_kw = "time_uniform", ml_collections.ConfigDict({"rho": 1.0})
        c.scale_time = 0.0
    if "noafs" in args:             # digits' mean is far from 0: AFS's D(x; 80) ~ 0 is off
        c.afs, c.nfes = False, (4, 6, 8, 10)
    if "tiny" in args:
        c.gmm_components, c.nfes, c.num_trajectories, c.batch_size = 4, (5,), 64, 32
        c.num_eval, c.reference_steps = 16, 65
    return c
