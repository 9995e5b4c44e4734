"""ament_python package: ``pip install -e .`` and ``colcon build`` both work from this file."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "spatialvlm_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    # The compact VLM's trained weights ship inside the package (spatialvlm_ros/vlm/weights/).
    package_data={f"{PACKAGE}.vlm": ["weights/*"]},
    install_requires=["setuptools"],  # runtime deps: requirements.txt (pip) or package.xml (rosdep)
    zip_safe=False,                   # the weights are read from a folder on disk
    maintainer="spatialvlm_ros maintainers",
    maintainer_email="maintainers@spatialvlm-ros.invalid",
    description="SpatialVLM-style metric spatial reasoning for ROS 2 robots",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "spatialvlm = spatialvlm_ros.cli:main",
            "spatial_reward_node = spatialvlm_ros.ros.spatial_reward_node:main",
            "sim_camera_node = spatialvlm_ros.ros.sim_camera_node:main",
        ],
    },
)
