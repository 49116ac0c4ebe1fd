"""The app contract of DESIGN.md, written out independently of the code under test."""

from __future__ import annotations

from forgegen.schema import Config


def expected_app_names(config: Config) -> set[str]:
    names = {"release", "prerelease", "comprehensive-release", "status", "forge:sync", "test", "dev-up", "dev-down", "dev-status", "codegen", "codegen-sync"}
    for name in config.services:
        envs = [e.name for e in config.service_environments(name)]
        names |= {f"build:{name}", f"push:{name}", f"status:{name}", f"release:{name}",
                  f"prerelease:{name}", f"comprehensive-release:{name}",
                  f"test:{name}", f"lint:{name}", f"fmt:{name}", f"fmt-check:{name}",
                  f"test:{name}:unit", f"test:{name}:integration", f"test:{name}:e2e",
                  f"e2e-prepare:{name}", f"e2e-run:{name}", f"dev-up:{name}", f"dev-down:{name}",
                  f"extract-schema:{name}", f"codegen:{name}", f"update-cargo-nix:{name}"}
        if envs:
            names.add(f"deploy:{name}")
        for env in envs:
            names |= {f"deploy:{name}:{env}", f"rollout:{name}:{env}", f"rollback:{name}:{env}",
                      f"reconcile:{name}:{env}", f"migrate:{name}:{env}"}
    names |= {f"reconcile:{e.name}" for e in config.environments}
    if config.provision is not None:
        names |= {f"provision:{kind}" for kind in ("postgres", "attic") if getattr(config.provision, kind)}
    return names
