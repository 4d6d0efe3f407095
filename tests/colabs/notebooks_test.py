"""Run the tutorial notebooks in colabs/ end to end and check what they import.

Each notebook runs top to bottom in its own Jupyter kernel with nbclient, in small-data
mode (`MTL_LAYERS_NOTEBOOK_SMALL=1`), with the working folder in a temporary folder so
its exports land there. The kernel is a separate process, so it gets the environment
explicitly: the Keras mode of this pytest run (`TF_USE_LEGACY_KERAS`), except in the
TFRS notebook, which sets Keras 2 mode itself in its first code cell, and the real-data
folder of the `data_root` fixture.

The import test parses every code cell and accepts only public `mtl_layers` API: no
module or name that starts with an underscore, and only names that a module lists in its
`__all__` (or its submodules) when it has one.
"""

import ast
import importlib
import importlib.util
import os
import pathlib

import pytest

nbformat = pytest.importorskip(
    "nbformat", reason="nbformat is missing; install the notebook extra: pip install -e '.[notebooks]'"
)
nbclient = pytest.importorskip(
    "nbclient", reason="nbclient is missing; install the notebook extra: pip install -e '.[notebooks]'"
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
COLABS = REPO_ROOT / "colabs"
NOTEBOOKS = (
    "mmoe_quickstart.ipynb",
    "census_mmoe.ipynb",
    "sequential_experts.ipynb",
    "hypergrid.ipynb",
    "tfrs_serving.ipynb",
)
# Real data each notebook reads from the data folder; the Adult notebook uses the copy
# shipped in the package, and the quickstart uses synthetic data.
DATA_FOLDERS = {
    "sequential_experts.ipynb": ("movielens-100k",),
    "hypergrid.ipynb": ("glue",),
    "tfrs_serving.ipynb": ("movielens-100k",),
}
# A generous bound per cell, far above the small-data runs, so a hung kernel fails the test
# instead of stalling CI.
CELL_TIMEOUT_SECONDS = 900


def _read(name):
    return nbformat.read(COLABS / name, as_version=4)


def _code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _python_source(cell) -> str:
    # IPython magics and shell escapes are not Python; the notebooks use none, but a cell
    # that gains one should still parse here.
    lines = cell.source.splitlines()
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def test_notebook_list_matches_folder():
    assert sorted(path.name for path in COLABS.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_stored_without_outputs(name):
    for cell in _code_cells(_read(name)):
        assert cell.outputs == [], f"{name}: cell {cell.id} is stored with outputs; clear them."
        assert cell.execution_count is None, f"{name}: cell {cell.id} has an execution count."


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_layout(name):
    cells = _code_cells(_read(name))
    first = cells[0].source
    assert '"google.colab" in sys.modules' in first, f"{name}: the first code cell must install only in Colab."
    assert "pip" in first, f"{name}: the first code cell must install the library in Colab."
    parameters = [cell for cell in cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1, f"{name}: needs exactly one code cell tagged `parameters`."
    assert "MTL_LAYERS_NOTEBOOK_SMALL" in parameters[0].source


def test_tfrs_notebook_sets_keras_2_before_imports():
    first = _code_cells(_read("tfrs_serving.ipynb"))[0]
    tree = ast.parse(_python_source(first))
    statements = list(tree.body)
    setting = next(
        index
        for index, statement in enumerate(statements)
        if "TF_USE_LEGACY_KERAS" in ast.unparse(statement)
    )
    imported_before = [
        alias.name
        for statement in statements[:setting]
        if isinstance(statement, (ast.Import, ast.ImportFrom))
        for alias in statement.names
    ]
    assert imported_before == ["os"], imported_before


def _public_module_error(module: str):
    """Return why `module` is not public mtl_layers API, or None when it is."""
    private = [part for part in module.split(".") if part.startswith("_")]
    if private:
        return f"imports the private module {module}"
    return None


def _import_errors(tree):
    """Yield an error for every non-public mtl_layers import or attribute in `tree`."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "mtl_layers":
                    continue
                error = _public_module_error(alias.name)
                if error:
                    yield error
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] != "mtl_layers" or node.level:
                continue
            error = _public_module_error(module)
            if error:
                yield error
                continue
            loaded = importlib.import_module(module)
            public = getattr(loaded, "__all__", None)
            for alias in node.names:
                if alias.name == "*":
                    yield f"uses `from {module} import *`; import names explicitly"
                elif alias.name.startswith("_"):
                    yield f"imports the private name {module}.{alias.name}"
                elif public is not None and alias.name not in public:
                    if importlib.util.find_spec(f"{module}.{alias.name}") is None:
                        yield f"imports {module}.{alias.name}, which is not in {module}.__all__"
                aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not node.attr.startswith("__"):
            root = node
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases and node.attr.startswith("_"):
                yield f"uses the private attribute {ast.unparse(node)}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_imports_only_public_api(name):
    source = "\n".join(_python_source(cell) for cell in _code_cells(_read(name)))
    errors = sorted(set(_import_errors(ast.parse(source))))
    assert errors == [], f"{name}: " + "; ".join(errors)


def test_import_check_rejects_private_api():
    source = (
        "import mtl_layers as mtl\n"
        "from mtl_layers.layers import _validation\n"
        "from mtl_layers.layers._validation import check_positive_int\n"
        "from mtl_layers.models import mose_layers\n"
        "from mtl_layers.models import ClearMask\n"
        "mtl.layers._validation.check_positive_int('x', 1)\n"
    )
    errors = list(_import_errors(ast.parse(source)))
    assert any("private name mtl_layers.layers._validation" in error for error in errors), errors
    assert any("private module mtl_layers.layers._validation" in error for error in errors), errors
    assert any("mtl_layers.models.ClearMask" in error for error in errors), errors
    assert any("private attribute mtl.layers._validation" in error for error in errors), errors
    assert not any("mose_layers" in error for error in errors), errors


def _kernel_environment(name, data_root):
    environment = dict(os.environ)
    environment["MTL_LAYERS_NOTEBOOK_SMALL"] = "1"
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if data_root is not None:
        environment["MTL_LAYERS_DATA_DIR"] = str(data_root)
    if name == "tfrs_serving.ipynb":
        # The notebook sets Keras 2 mode itself; start it without the setting, as in Colab.
        environment.pop("TF_USE_LEGACY_KERAS", None)
    return environment


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_small_mode(name, request, tmp_path):
    data_root = None
    for folder in DATA_FOLDERS.get(name, ()):
        data_root = request.getfixturevalue("data_root")
        request.getfixturevalue("data_file")(folder)
    notebook = _read(name)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # Keyword arguments of execute() reach the kernel manager's start_kernel().
    client.execute(env=_kernel_environment(name, data_root), cwd=str(tmp_path))
    errors = [
        output
        for cell in _code_cells(notebook)
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []
