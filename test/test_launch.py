"""Launch files: they compile, and name only executables, arguments and parameters that exist.

``launch``/``launch_ros`` are not installable from the package index; the files are checked
statically here and run for real where a full ROS 2 install provides them.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from spatialvlm_ros.config import SimCameraConfig, SpatialRewardConfig, TopicsConfig, config_path, load_config

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
CONSOLE_SCRIPTS = set(re.findall(r'"(\w+) = spatialvlm_ros[\w.]+:main"', (REPO / "setup.py").read_text()))
NODE_CONFIGS = {"spatial_reward_node": SpatialRewardConfig, "sim_camera_node": SimCameraConfig}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def _nodes(tree: ast.AST) -> list[ast.Call]:
    return _calls(tree, "Node") + _calls(tree, "LifecycleNode")


def _kwarg(call: ast.Call, key: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == key), None)


def test_there_are_launch_files() -> None:
    assert {p.name for p in LAUNCH_FILES} == {"spatial_reward.launch.py", "sim_demo.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_real_executables_and_configs(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    compile(tree, str(path), "exec")
    nodes = _nodes(tree)
    assert nodes, "no Node() in the launch file"
    for node in nodes:
        executable = ast.literal_eval(_kwarg(node, "executable"))
        name = ast.literal_eval(_kwarg(node, "name"))
        assert executable in CONSOLE_SCRIPTS, f"{executable} is not a console script in setup.py"
        assert name in NODE_CONFIGS, f"node name {name} has no typed config"
    # Every default parameter file the launch file points at exists and holds only known parameters.
    for literal in re.findall(r'"([\w]+\.yaml)"', path.read_text()):
        for name in {ast.literal_eval(_kwarg(n, "name")) for n in nodes}:
            load_config(NODE_CONFIGS[name], name, config_path(literal))


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_parameters_set_in_launch_files_are_known(path: Path) -> None:
    # A parameter a launch file sets in a dict (e.g. autostart from a launch argument) must be one the node knows.
    from spatialvlm_ros.config import to_flat
    for node in _nodes(ast.parse(path.read_text())):
        known = set(to_flat(NODE_CONFIGS[ast.literal_eval(_kwarg(node, "name"))]())) | {"use_sim_time"}
        parameters = _kwarg(node, "parameters")
        for entry in getattr(parameters, "elts", []):
            if isinstance(entry, ast.Dict):
                names = {ast.literal_eval(key) for key in entry.keys}
                assert names <= known, f"{path.name}: unknown parameters {names - known}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_the_reward_node_is_launched_as_a_lifecycle_node(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert [ast.literal_eval(_kwarg(n, "name")) for n in _calls(tree, "LifecycleNode")] == ["spatial_reward_node"]
    assert all(_kwarg(n, "namespace") is not None for n in _calls(tree, "LifecycleNode"))   # older launch_ros needs it


def test_spatial_reward_launch_passes_autostart() -> None:
    text = (REPO / "launch" / "spatial_reward.launch.py").read_text()
    assert 'DeclareLaunchArgument("autostart", default_value="true")' in text
    assert '"autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool)' in text


def test_remapped_topics_are_the_nodes_own_defaults() -> None:
    # The launch file remaps the node's default input names; they must be the names the node uses.
    spec = (REPO / "launch" / "spatial_reward.launch.py").read_text()
    topics = ast.literal_eval(re.search(r"NODE_TOPICS = (\{.*?\})", spec, re.S).group(1))
    defaults = TopicsConfig()
    assert topics == {"image": defaults.image, "depth": defaults.depth, "camera_info": defaults.camera_info}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_description_builds_where_launch_is_installed(path: Path) -> None:
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch_ros is not installed (not on the package index); checked statically above")
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities
