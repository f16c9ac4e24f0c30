"""The xDS protocol: the ADS server (SotW and delta), snapshots per node, node tokens and a small client.

Modules: ``ads`` (the gRPC service), ``delta`` (incremental xDS), ``snapshot`` (versions and the cache),
``tokens`` (per-node credentials), ``type_urls`` (the resource types served) and ``client`` (an ADS
client for tests, the benchmark and debugging).
"""
