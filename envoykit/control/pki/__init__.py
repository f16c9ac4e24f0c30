"""The mesh PKI: SPIFFE IDs, the CA issuing workload certificates, SDS secrets and private key files.

Modules: ``spiffe`` (SPIFFE IDs), ``ca`` and ``x509`` (the CA), ``sds`` (the secrets each node fetches),
``keyfiles`` (0600 key files) and ``cli`` (``envoykit ca``).
"""
