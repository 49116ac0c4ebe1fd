"""The Forge runtime: what the generated flake apps run (``forge <command> --plan plan.json``).

Runtime modules never import the renderer or the generator CLI.
"""
