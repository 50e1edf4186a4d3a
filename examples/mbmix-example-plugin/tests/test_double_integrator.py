"""The plugin's own tests: it registers its kind, and the env keeps the DiffEnv contract."""
import mbmix_fw as mb
from mbmix_fw.testing import check_env

import mbmix_example_plugin as plugin


def test_registers_its_env_kind():
    registry = mb.make_registry(plugin)
    assert not registry.failures
    env = registry.env.build(plugin.DoubleIntegratorConfig(num_envs=3), mb.BuildContext.cpu())
    assert isinstance(env, plugin.DoubleIntegrator) and env.num_envs == 3


def test_env_keeps_the_contract():
    # shapes, dtypes, seeded resets, batch independence, and gradients against finite differences
    check_env(plugin.DoubleIntegrator(plugin.DoubleIntegratorConfig(num_envs=4)))
