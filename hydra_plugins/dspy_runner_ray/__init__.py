"""dspy-runner's Ray launcher for Hydra: `hydra/launcher=ray` (conf/hydra/launcher/ray_cluster.yaml).

It replaces hydra-ray-launcher, whose latest release (1.2.2) pins cloudpickle<3 while DSPy needs
cloudpickle>=3.1. It is built on Hydra's public Launcher API and Ray's own (ray.init, ray.remote,
ray.get): Ray serialises the jobs with the cloudpickle it vendors.
"""
