"""Experiments: the jobs behind ``python -m jaxdiff.<job>`` (each has ``run(config,
workdir)``, a report and ``main()``). Library modules never import this subpackage."""
