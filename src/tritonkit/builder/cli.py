"""`tritonkit build` (`make build-engines`): build every model of the spec, gate its variants,
render the repositories and write the model cards; a stage whose inputs did not change is
skipped, so a second run rebuilds nothing and leaves every file as it was.

    tritonkit build                          # every model, every target
    tritonkit build --model churn --target embedded
    tritonkit build --force                  # rebuild everything
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from tritonkit.builder.model_card import write_model_card
from tritonkit.errors import TritonKitError
from tritonkit.families import family_of
from tritonkit.families.render import render_repository
from tritonkit.repository.layout import STEPS_DIR, repository_path
from tritonkit.spec import DEFAULT_SPEC, Spec, TargetName, load_spec
from tritonkit.stages.manifest import Manifest, fingerprint
from tritonkit.stages.sources import sources

logger = logging.getLogger("tritonkit.build")

REPOSITORY_MANIFEST = "build_manifest.json"


def _artefact_manifests(spec: Spec) -> list[Path]:
    from tritonkit.paths import ARTIFACTS

    return [ARTIFACTS / name / str(model.version) / "manifest.json"
            for name, model in spec.models.items()]


def render_sources(spec: Spec) -> tuple[Path, ...]:
    """Everything whose change re-renders a repository (besides the spec and the artefacts):
    what the renderer and the spec's families import, and the step files they copy."""
    families = sorted({family_of(model).__name__ for model in spec.models.values()})
    return (*sources(render_repository.__module__, *families), *sorted(STEPS_DIR.glob("*.py")))


def render_if_changed(spec: Spec, target: TargetName, *, force: bool = False) -> bool:
    """Render one target's repository unless its manifest shows the same spec, sources and
    artefacts made it; returns whether it rendered."""
    repository = repository_path(spec, target)
    manifest = Manifest.load(repository / REPOSITORY_MANIFEST)
    key = fingerprint(values={"spec": spec.model_dump(mode="json"), "target": target},
                      files=[*render_sources(spec), *_artefact_manifests(spec)])
    configs = sorted(repository.glob("*/config.pbtxt"))
    if not force and configs and manifest.fresh("render", key):
        logger.info("%s repository %s up to date", target, repository)
        return False
    started = time.perf_counter()
    written = render_repository(spec, target, repository)
    outputs = sorted(p for p in repository.rglob("*") if p.is_file()
                     and p.name != REPOSITORY_MANIFEST)
    manifest.record("render", key, outputs=outputs, seconds=time.perf_counter() - started,
                    extra={"models": sorted(p.parent.name for p in written)})
    manifest.save()
    return True


def build(spec: Spec, targets: list[TargetName], *, force: bool = False) -> dict[str, Any]:
    """Build, gate, render and document; returns what each model's build did."""
    summaries = {}
    for name, model in spec.models.items():
        logger.info("== %s (%s)", name, model.family)
        summaries[name] = family_of(model).build(name, model, force=force)
    for target in targets:
        render_if_changed(spec, target, force=force)
    for name, model in spec.models.items():
        write_model_card(name, model, spec)
    return summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tritonkit build", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="the model spec (YAML)")
    parser.add_argument("--target", action="append", choices=["embedded", "production"],
                        help="target(s) to render; default: every target of the spec")
    parser.add_argument("--model", action="append",
                        help="model(s) of the spec to build; default: all")
    parser.add_argument("--force", action="store_true",
                        help="rebuild every stage even where its inputs did not change")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        spec = load_spec(args.spec)
        if args.model:
            spec = spec.only(*args.model)
        summaries = build(spec, args.target or list(spec.targets), force=args.force)
    except (TritonKitError, KeyError) as exc:
        logger.error("%s", exc)
        return 1
    for name, summary in summaries.items():
        for target_name, variant in sorted(spec.models[name].variants.serve.items()):
            gate = summary.get("gates", {}).get(variant, {})
            if spec.targets[target_name].gpu and "fallbacks" in gate:
                for provider, nodes in sorted(gate["fallbacks"].items()):
                    print(f"{name}: {target_name} serves {variant}; {provider}: "
                          + (f"{len(nodes)} node(s) fall back to the CPU: {'; '.join(nodes)}"
                             if nodes else "runs every node"))
        for variant, reason in sorted(summary.get("skipped", {}).items()):
            print(f"{name}: {variant} {reason}")
        failed = [v for v, g in summary.get("gates", {}).items() if not g["passed"]]
        for variant in failed:
            print(f"{name}: {summary['gates'][variant]['message']} (left out)")
    return 0
