"""The package's layout: a few subpackages a newcomer can name, no circular imports, and every
name of ``from pyro_vae import ...`` still there."""

import ast
from pathlib import Path

import pyro_vae

PACKAGE = Path(pyro_vae.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """The pyro_vae modules ``path`` imports when it is imported: at module level (not the
    ``if TYPE_CHECKING:`` imports of annotations, which never run, nor imports inside functions)."""
    found = set()
    for stmt in ast.parse(path.read_text()).body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.module.startswith("pyro_vae"):
            found.add(stmt.module)
            found.update(f"{stmt.module}.{a.name}" for a in stmt.names)  # from pyro_vae.x import module
        elif isinstance(stmt, ast.Import):
            found.update(a.name for a in stmt.names if a.name.startswith("pyro_vae"))
    return found


def graph():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    # A module depends on the modules it imports; importing one of a package's modules runs the
    # package's __init__ first, which imports nothing back (pyro_vae.training's exports its Trainer).
    return {
        name: sorted(m for m in imports(path) if m in modules and m not in packages and m != name)
        for name, path in modules.items()
        if name not in packages
    }


def test_no_module_imports_itself_through_others():
    deps = graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in deps.get(node, []):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in deps:
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_package_is_a_few_subpackages_and_the_top_level_names_stay():
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert folders == ["data", "figures", "inference", "models", "training"]
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "cli", "errors", "files", "rng"]
    for name in pyro_vae.__all__:
        assert getattr(pyro_vae, name) is not None, name
    from pyro_vae import VAE, Trainer, elbo_terms, load_mnist, log_likelihood  # noqa: F401 -- the README's names
