"""Translation: the mesh model into Envoy resources (protobuf messages), per node.

Modules: ``translation`` (``translate(mesh)`` → every node's resources), ``clusters``, ``listeners``,
``routes``, ``filters`` and ``accesslog`` (the resource builders), ``tls`` and ``mtls`` (mesh mTLS over
SDS), ``bootstrap`` (a node's bootstrap), ``guard`` and ``validate`` (checks before a version is served),
``inject`` and ``inject_file`` (``envoykit envoy inject``) and ``pb`` (small protobuf builders).
"""
