"""The mesh model: what ``mesh.yaml`` says (pydantic), its validation (schema and semantics) and queries.

Modules: ``mesh`` (the models), ``types`` and ``traffic`` (value types, VirtualService and
DestinationRule), ``loader`` (parse and validate a file), ``semantics`` (references the schema cannot see),
``queries`` (subset members, endpoint addresses, policies), ``nodes`` (the Envoys of a mesh) and
``ports`` (the same mesh on other ports).
"""
