"""``python -m jaxkd.kt --config=configs/kd/kt.py[:cpu|:tiny] --workdir=W``: the KT
experiment (:func:`jaxkd.kt.experiment.run`) and its printed report."""
from jaxinfra.cli import run_job
from jaxkd.kt import experiment

if __name__ == "__main__":
    run_job(experiment.run, experiment.report, what="KT config file (configs/kd/kt.py)",
            multi_process=True)
