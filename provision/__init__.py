"""forge-provision: PostgreSQL databases and Attic caches from YAML, idempotently, with a plan.

Modules: ``schema`` (the YAML files), ``catalog`` (reading PostgreSQL's catalogue), ``plan``
(config + catalogue -> statements, pure), ``postgres`` (running a plan), ``tokens`` (Attic JWTs),
``attic`` (Attic's cache-config API and client config), ``report`` (text output), ``cli``.
Importing the package imports nothing else; psycopg is imported only when a run starts.
"""

__all__: list[str] = []
