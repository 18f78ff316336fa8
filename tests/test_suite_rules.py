"""Rules of the test suite itself, checked statically from the test modules' source.

- A test that starts a subprocess which imports JAX is marked ``slow``, and so is one that
  takes over ``SLOW_CPU_SECONDS`` of CPU in-process on a warm compile cache (the marker's
  help text in pyproject.toml says both): ``make test-fast`` (``pytest -m "not slow"``)
  stays the loop after each edit, while ``make test`` and CI still run everything. The
  first rule is checked here from the source; the second is measured, not static:
  ``pytest --cpu-durations=0`` (tests/cpu_durations.py) lists the tests over the line.
- Test modules import shared helpers from ``tests.helpers`` and fixtures come from
  ``tests/conftest.py``: no test module imports another test module or the conftest.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from tests.cpu_durations import SLOW_CPU_SECONDS
from tests.helpers import REPO

TESTS = REPO / "tests"
TEST_MODULES = sorted(TESTS.glob("test_*.py"))

# Tests that start a Python subprocess which imports no JAX, so they stay out of `slow`.
# Each entry says why; a test listed here that starts to import JAX belongs in `slow`.
NO_JAX_SUBPROCESS = {
    # `--help`, `--version`, each verb's `--help` and `config new`: each test asserts that
    # none of jax, flax, orbax, ott is imported.
    "test_startup.py::test_help_imports_no_heavy_module",
    "test_startup.py::test_config_new_imports_no_heavy_module",
    # A missing config file is refused before the init path (and JAX) is imported.
    "test_end_to_end.py::test_subprocess_bad_input_is_one_line_and_exit_2",
    # Typer's usage errors end the process while it parses the command line.
    "test_cli_errors.py::test_bad_flags_in_a_real_process_are_one_line",
    # Shell completion runs no command; test_completion_imports_no_jax asserts it.
    "test_completion.py::test_show_completion_prints_a_bash_script",
    "test_completion.py::test_the_bash_script_is_valid_bash",
    "test_completion.py::test_option_values_and_commands_are_completed",
    "test_completion.py::test_checkpoint_arguments_fall_back_to_path_completion",
    "test_completion.py::test_completion_imports_no_jax",
    # --show-completion/--install-completion SHELL print or write the script while the
    # command line is parsed (eager options), from sh and bash.
    "test_completion.py::test_show_completion_prints_the_script_of_the_shell_named",
    "test_completion.py::test_install_completion_installs_for_the_shell_named",
    "test_completion.py::test_a_shell_icnn_has_no_script_for_is_one_line",
    # --item names come from the checkpoint's layout files (checkpoint.layout), no JAX.
    "test_completion.py::test_item_values_are_completed_once_wired_to_item",
    # `python -m icnn_cli --version` (test_startup checks --version imports nothing heavy).
    "test_packaging.py::test_python_dash_m_runs_the_cli",
    # `import icnn_cli` alone; the test asserts JAX stays unimported.
    "test_python_api.py::test_importing_icnn_cli_imports_no_jax",
}

SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}

# Helper modules whose subprocesses import no JAX: calls into them do not make a test slow.
NO_JAX_HELPER_MODULES = {
    # The fake GCS server runs as its own Python process; only the test imports JAX.
    "tests.gcs_emulator",
}


def _runs_an_outside_program(call: ast.Call) -> bool:
    """``subprocess.run(["bash", "-n"])``: a literal program that is neither icnn nor Python."""
    if not call.args or not isinstance(call.args[0], ast.List | ast.Tuple):
        return False
    elements = call.args[0].elts
    if not elements or not isinstance(elements[0], ast.Constant):
        return False
    program = str(elements[0].value)
    return "icnn" not in program and "python" not in program


def _starts_a_subprocess_itself(function: ast.FunctionDef) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "subprocess"
        and node.func.attr in SUBPROCESS_CALLS
        and not _runs_an_outside_program(node)
        for node in ast.walk(function)
    )


def _names_used(function: ast.FunctionDef) -> set[str]:
    """What it calls (``name`` or ``module.name``) and the fixtures it asks for by parameter."""
    used = {argument.arg for argument in function.args.args}
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                used.add(node.func.id)
            elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
                used.add(f"{node.func.value.id}.{node.func.attr}")
    return used


def _is_fixture(function: ast.FunctionDef) -> bool:
    return any("fixture" in ast.unparse(decorator) for decorator in function.decorator_list)


def _marks_slow(decorators: list[ast.expr]) -> bool:
    return any(ast.unparse(decorator).endswith("mark.slow") for decorator in decorators)


def _module_marks_slow(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets
        ):
            return "mark.slow" in ast.unparse(node.value)
    return False


def _top_level_functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _spawning_functions(functions: dict[str, ast.FunctionDef], outside: set[str]) -> set[str]:
    """The names in ``functions`` that start a subprocess, directly or through another of
    them or through ``outside`` (spawning names from other modules and conftest fixtures)."""
    spawning = {
        name for name, function in functions.items() if _starts_a_subprocess_itself(function)
    }
    while True:
        more = {
            name
            for name, function in functions.items()
            if name not in spawning and _names_used(function) & (spawning | outside)
        }
        if not more:
            return spawning
        spawning |= more


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def _spawning_in_helper_modules() -> dict[str, set[str]]:
    """Module name -> its top-level functions that start a subprocess (helpers.run_icnn, ...)."""
    found = {}
    for path in sorted(TESTS.rglob("*.py")):
        name = _module_name(path)
        if path.name.startswith("test_") or path.name == "conftest.py":
            continue
        if name in NO_JAX_HELPER_MODULES:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        found[name] = _spawning_functions(_top_level_functions(tree), set())
    return found


def _imported_spawning_names(tree: ast.Module, helpers: dict[str, set[str]]) -> set[str]:
    """Spawning helpers as this module calls them: ``run_icnn`` or ``make_golden.write_sharded``."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                local = alias.asname or alias.name
                if alias.name in helpers.get(node.module, ()):
                    names.add(local)
                for function in helpers.get(f"{node.module}.{alias.name}", ()):
                    names.add(f"{local}.{function}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                for function in helpers.get(alias.name, ()):
                    names.add(f"{alias.asname or alias.name}.{function}")
    return names


def _conftest_spawning_fixtures(helpers: dict[str, set[str]]) -> set[str]:
    tree = ast.parse((TESTS / "conftest.py").read_text())
    fixtures = {
        name: function
        for name, function in _top_level_functions(tree).items()
        if _is_fixture(function)
    }
    return _spawning_functions(fixtures, _imported_spawning_names(tree, helpers))


def unmarked_subprocess_tests(path: Path, helpers: dict[str, set[str]], fixtures: set[str]):
    """``module::test`` for each test in ``path`` that starts a subprocess but is not slow."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if _module_marks_slow(tree):
        return []
    functions = _top_level_functions(tree)
    outside = _imported_spawning_names(tree, helpers) | fixtures
    spawning = _spawning_functions(functions, outside)
    return [
        f"{path.name}::{name}"
        for name, function in functions.items()
        if name.startswith("test") and name in spawning and not _marks_slow(function.decorator_list)
    ]


def test_the_slow_marker_states_the_rule():
    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    text = "\n".join(markers["ini_options"]["markers"])

    assert "slow: starts a subprocess that imports JAX" in text
    assert f"or takes over {SLOW_CPU_SECONDS:g} s of CPU in-process on a warm compile cache" in text
    assert "pytest --cpu-durations=0 lists them" in text


def test_every_test_that_starts_a_jax_subprocess_is_marked_slow():
    helpers = _spawning_in_helper_modules()
    fixtures = _conftest_spawning_fixtures(helpers)
    unmarked = [
        test for path in TEST_MODULES for test in unmarked_subprocess_tests(path, helpers, fixtures)
    ]

    assert sorted(set(unmarked) - NO_JAX_SUBPROCESS) == [], (
        "these tests start a subprocess: mark them @pytest.mark.slow, or, if the subprocess"
        " imports no JAX, list them in NO_JAX_SUBPROCESS with the reason"
    )
    assert sorted(NO_JAX_SUBPROCESS - set(unmarked)) == [], "stale NO_JAX_SUBPROCESS entries"


def test_the_rule_catches_an_unmarked_subprocess_test(tmp_path):
    module = tmp_path / "test_example.py"
    module.write_text(
        "import subprocess, sys\n"
        "import pytest\n"
        "from tests.data import make_golden\n"
        "from tests.helpers import run_icnn\n"
        "def start(*args):\n"
        "    return subprocess.Popen([sys.executable, *args])\n"
        "@pytest.fixture\n"
        "def running():\n"
        "    return start('-c', 'import jax')\n"
        "def test_direct():\n"
        "    subprocess.run([sys.executable, '-c', 'import jax'])\n"
        "def test_through_the_helper():\n"
        "    run_icnn('init')\n"
        "def test_through_a_fixture(running):\n"
        "    pass\n"
        "def test_through_a_conftest_fixture(spawned):\n"
        "    pass\n"
        "def test_through_another_module():\n"
        "    make_golden.write_sharded('out')\n"
        "@pytest.mark.slow\n"
        "def test_marked():\n"
        "    run_icnn('init')\n"
        "def test_outside_program():\n"
        "    subprocess.run(['bash', '-n'])\n"
    )

    helpers = _spawning_in_helper_modules()

    assert unmarked_subprocess_tests(module, helpers, {"spawned"}) == [
        "test_example.py::test_direct",
        "test_example.py::test_through_the_helper",
        "test_example.py::test_through_a_fixture",
        "test_example.py::test_through_a_conftest_fixture",
        "test_example.py::test_through_another_module",
    ]
    module.write_text("import pytest\npytestmark = pytest.mark.slow\n" + module.read_text())
    assert unmarked_subprocess_tests(module, helpers, {"spawned"}) == []


def test_test_modules_import_helpers_not_each_other():
    offenders = []
    for path in TEST_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module
            elif isinstance(node, ast.Import):
                module = next((alias.name for alias in node.names), "")
            else:
                continue
            if module == "tests.conftest" or module.startswith("tests.test_"):
                offenders.append(f"{path.name}: {module}")

    assert offenders == [], "import shared helpers from tests.helpers"
