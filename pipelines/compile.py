"""Compile the pipeline and every component to IR YAML named with the package version.

`compile_pipeline(dir)` writes `selfcorrect-pipeline-<version>.yaml` and
`components/<component>-<version>.yaml` (one per component, loadable with
`kfp.components.load_component_from_file`); compiling twice gives byte-identical files.
`version_name()` names the pipeline version uploaded to a cluster: the package version, plus
the git commit when the checkout is not the release tag (`0.1.0+g1a2b3c4`, `0.1.0+g1a2b3c4.dirty`).
Every image is named when compiling (selfcorrect.images: `0.1.0-g1a2b3c4`, the registry of
`--registry` / SELFCORRECT_REGISTRY), not when the components were imported.
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

from kfp import compiler

from selfcorrect import __version__, images
from selfcorrect.config import ResourcesConfig, RunConfig, build
from selfcorrect.pipelines.score import PIPELINE_NAME, make_pipeline

REPO = Path(__file__).resolve().parent.parent


def pipeline_file(output_dir: str | Path) -> Path:
    return Path(output_dir) / f"{PIPELINE_NAME.replace('-score', '')}-pipeline-{__version__}.yaml"


def components() -> dict:
    """name -> component, for every component in selfcorrect.components."""
    from selfcorrect import components as comps

    return {name: getattr(comps, name) for name in sorted(comps.__all__)}


def component_file(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir) / "components" / f"{name}-{__version__}.yaml"


def compile_components(output_dir: str | Path = "dist") -> list[Path]:
    """One YAML per component, with the version in its name, description and image tag."""
    paths = []
    for name, comp in components().items():
        out = component_file(output_dir, name)
        out.parent.mkdir(parents=True, exist_ok=True)
        container = comp.component_spec.implementation.container
        defined, container.image = container.image, images.repin(container.image)
        try:
            compiler.Compiler().compile(comp, str(out))
        finally:
            container.image = defined
        _stable_header(out, f"# selfcorrect {__version__}: component {name}\n")
        paths.append(out)
    return paths


def compile_pipeline(output_dir: str | Path = "dist", config: dict | None = None,
                     resources: ResourcesConfig | None = None,
                     kubernetes_platform: bool = True, caching: bool = True) -> Path:
    """Write the pipeline YAML and the component YAMLs.

    `config` gives the pipeline parameters' defaults (default: RunConfig's); `resources`
    the model steps' accelerator, CPU and memory requests, fixed at compile time (default:
    config's, else none).
    kubernetes_platform: a second YAML document, the Kubernetes platform spec (node
    selectors, tolerations, secrets, scratch volume, /dev/shm), for Kubeflow Pipelines; off
    for Vertex AI. caching=False: no step is cached (`submit --no-cache`).
    """
    cfg = build(RunConfig, config) if config else RunConfig()
    if resources is not None:
        cfg = dataclasses.replace(cfg, resources=resources)
    out = pipeline_file(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    from kfp.dsl import pipeline_context

    default = pipeline_context.Pipeline._execution_caching_default   # kfp's own switch
    pipeline_context.Pipeline._execution_caching_default = default and caching
    try:
        pipeline = make_pipeline(cfg, kubernetes_platform)
    finally:
        pipeline_context.Pipeline._execution_caching_default = default
    compiler.Compiler().compile(pipeline, str(out))
    _stable_header(out)
    compile_components(output_dir)
    return out


_DEFAULT = re.compile(r"^(#.*\[Default: )(\{.*\})\]$")


def _sorted(value):
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return [_sorted(v) for v in value] if isinstance(value, list) else value


def _stable_header(path: Path, first_line: str = "") -> None:
    """KFP's comment header prints dict defaults in protobuf map order, which changes from
    process to process; print them with sorted keys so the file is byte-identical."""
    lines = path.read_text().split("\n")
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            break
        m = _DEFAULT.match(line)
        if m:
            lines[i] = f"{m.group(1)}{_sorted(ast.literal_eval(m.group(2)))!r}]"
    path.write_text(first_line + "\n".join(lines))


def version_name(repo: str | Path = REPO) -> str:
    """The pipeline version name: `0.1.0` on a clean checkout of tag v0.1.0 (or outside git),
    `0.1.0+g<commit>` elsewhere, with `.dirty` when files differ from the commit. The images
    carry the same commit as `0.1.0-g<commit>` (selfcorrect.images.tag)."""
    version, commit, dirty = images.source_version(repo)
    return version if commit is None else f"{version}+g{commit}" + (".dirty" if dirty else "")
