"""Pure differentiable maths shared by every estimator: rollouts, returns, MIX objectives, Jacobian probes,
networks. Imports only :mod:`mbmix_fw.contracts` (and the package's top-level helpers).
"""
