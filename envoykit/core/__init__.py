"""What every envoykit server shares: logging, metrics, the gRPC runner, watched config files and Envoy.

Public names::

    from envoykit.core import (
        AddressInUse, bind_exclusive, ConfigError, configure_logging, get_logger, start_metrics_server,
        AioGrpcServer, serve_forever, WatchedConfig, load_yaml_file, yaml_error,
        EnvoyProcess, envoy_binary, validate_envoy_config, free_port,
    )
"""

from envoykit.core.bind import AddressInUse, bind_exclusive
from envoykit.core.envoy import EnvoyError, EnvoyProcess, envoy_binary, validate_envoy_config
from envoykit.core.errors import ConfigError
from envoykit.core.logs import configure_logging, get_logger
from envoykit.core.metrics import Health, start_metrics_server
from envoykit.core.net import FreePorts, free_port, wait_for_port
from envoykit.core.reload import WatchedConfig
from envoykit.core.server import AioGrpcServer, SyncGrpcServer, serve_forever, serve_sync_forever
from envoykit.core.yamlfile import load_yaml_file, validation_error_to_config_error, yaml_error

__all__ = [
    "AddressInUse",
    "AioGrpcServer",
    "ConfigError",
    "EnvoyError",
    "EnvoyProcess",
    "FreePorts",
    "Health",
    "SyncGrpcServer",
    "WatchedConfig",
    "bind_exclusive",
    "configure_logging",
    "envoy_binary",
    "free_port",
    "get_logger",
    "load_yaml_file",
    "serve_forever",
    "serve_sync_forever",
    "start_metrics_server",
    "validate_envoy_config",
    "validation_error_to_config_error",
    "wait_for_port",
    "yaml_error",
]
