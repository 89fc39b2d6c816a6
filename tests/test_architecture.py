"""Dependencies run one way: models <- training, models <- inference <- evaluation and the CLI.

Only `spiralnet_jax.training` (and train.py) may import the training modules: prediction,
segmentation, evaluation and checkpoint loading must work without the training loop, its data
pipeline and its logs. Checked twice: statically, over every import statement of the package
(also those inside functions, which an import at run time only sees when the function runs),
and at run time, in a fresh interpreter that imports the inference side.
"""

import ast
import json
import re
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "spiralnet_jax"
TRAINING = ("spiralnet_jax.training", "spiralnet_jax.train_lib")
INFERENCE = ("predict", "segment", "evaluation", "continuation", "assembly", "regions", "scorer",
             "segmenter", "spiral", "unet", "metrics", "figures", "data", "pretrained",
             "classical", "checkpoints", "stages", "unet_predict", "segment_io", "reports",
             "step_net", "train_state", "errors", "conv", "defaults", "cli", "seeding", "scale",
             "napari_plugin", "segment_model", "segment_dask", "blocks", "models", "segment_zarr")
MAX_LINES = 400
MAX_FUNCTION_LINES = 60


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
  """{dotted name: file} of every module of the package, and of eval.py."""
  found = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  found["eval"] = REPO / "eval.py"
  return found


def _resolve(name: str, modules: dict[str, pathlib.Path]) -> list[str]:
  """The package modules an import of `name` loads: it (if a module) and its parent packages."""
  parts = name.split(".")
  return [m for m in (".".join(parts[:k]) for k in range(1, len(parts) + 1)) if m in modules]


def _imports(path: pathlib.Path, package: str, modules: dict[str, pathlib.Path]) -> set[str]:
  """Package modules that any import statement in `path` names, wherever the statement is."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        out.update(_resolve(alias.name, modules))
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # Relative: from the importing module's package.
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      out.update(_resolve(base, modules))
      for alias in node.names:  # `from pkg import module` loads pkg.module.
        out.update(_resolve(f"{base}.{alias.name}", modules))
  return out


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    graph[name] = _imports(path, package, modules) - {name}
  return graph


def _reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
  """{module: the module that imports it} for everything `start` imports, transitively."""
  via, todo = {}, [start]
  while todo:
    current = todo.pop()
    for dep in sorted(graph.get(current, ())):
      if dep not in via and dep != start:
        via[dep] = current
        todo.append(dep)
  return via


def _is_training(name: str) -> bool:
  return any(name == t or name.startswith(t + ".") for t in TRAINING)


def _chain(via: dict[str, str], start: str, end: str) -> str:
  chain = [end]
  while chain[-1] != start:
    chain.append(via[chain[-1]])
  return " <- ".join(chain)


def test_the_listed_inference_modules_exist():
  modules = _modules()
  missing = [m for m in INFERENCE if f"spiralnet_jax.{m}" not in modules]
  assert not missing, f"listed here but not in the package: {missing}"


def test_no_module_outside_training_imports_training_even_inside_functions():
  graph = _graph()
  assert "spiralnet_jax.training.loop" in graph  # The walk sees the training side at all.
  offenders = []
  for name in sorted(graph):
    if _is_training(name):
      continue
    via = _reachable(graph, name)
    for dep in sorted(d for d in via if _is_training(d)):
      offenders.append(_chain(via, name, dep))
  assert not offenders, "the inference side imports training:\n" + "\n".join(offenders)


@pytest.mark.parametrize("entry", ["spiralnet_jax.segment", "spiralnet_jax.evaluation", "eval"])
def test_entry_points_reach_the_checkpoints_but_not_training(entry):
  via = _reachable(_graph(), entry)
  assert "spiralnet_jax.checkpoints" in via
  assert not [d for d in via if _is_training(d)]


def test_importing_the_inference_side_loads_no_training_module():
  names = [f"spiralnet_jax.{m}" for m in INFERENCE]
  script = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n"
            "  importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                        timeout=300, check=True)
  loaded = json.loads(proc.stdout.strip().splitlines()[-1])
  assert "spiralnet_jax.checkpoints" in loaded
  assert [m for m in loaded if _is_training(m)] == []


def test_one_model_abstraction_serves_evaluation_and_the_command_line():
  """Exactly one class named Model in the package: eval.py and spiralnet-segment share it."""
  defined = sorted(name for name, path in _modules().items()
                   for node in ast.walk(ast.parse(path.read_text(), str(path)))
                   if isinstance(node, ast.ClassDef) and node.name == "Model")
  assert defined == ["spiralnet_jax.models"]


def test_no_function_of_the_package_exceeds_60_lines():
  long = {f"{path.relative_to(REPO)}:{node.name}": node.end_lineno - node.lineno + 1
          for path in sorted(PACKAGE.rglob("*.py"))
          for node in ast.walk(ast.parse(path.read_text(), str(path)))
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
          and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES}
  assert not long, f"over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_file_of_the_package_exceeds_400_lines():
  long = {str(p.relative_to(REPO)): n for p in sorted(PACKAGE.rglob("*.py"))
          if (n := len(p.read_text().splitlines())) > MAX_LINES}
  assert not long, f"over {MAX_LINES} lines: {long}"


def test_the_module_map_in_design_md_names_every_module():
  text = (REPO / "docs" / "design.md").read_text()
  start = text.index("## Module map")
  section = text[start:text.index("\n## ", start + 1)]
  missing = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
             if p.stem != "__init__" and not re.search(rf"\b{p.stem}\b", section)]
  assert not missing, f"docs/design.md's module map does not name {missing}"
