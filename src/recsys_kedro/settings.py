"""Project settings (https://docs.kedro.org/en/stable/kedro_project_setup/settings.html)."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from recsys_kedro.hooks import RunLockHooks, SparkHooks
from recsys_kedro.quiet import silence_known_noise

# Known, understood third-party deprecation notes (listed in recsys_kedro/quiet.py).
silence_known_noise()

# kedro-mlflow registers its own hooks through its plugin entry point.
HOOKS = (RunLockHooks(), SparkHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment (e.g. databricks) overrides single keys of parameters and mlflow.yml,
    # not whole sections.
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
    # `${oc.env:NAME,default}` everywhere, not only in credentials: conf/cluster reads the
    # master's address and the shared data root from the environment.
    "custom_resolvers": {"oc.env": oc.env},
    "config_patterns": {
        "spark": ["spark*", "spark*/**"],
        "mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"],  # kedro-mlflow's own pattern
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
    },
}
