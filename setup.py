"""Map the top-level folders into the one `gpuctl` namespace and find their subpackages.

pyproject.toml holds all metadata; this only lists packages, because a static list
would silently drop any subpackage added later from built wheels.
"""

from pathlib import Path

from setuptools import find_packages, setup

FOLDERS = {
    "gpuctl": "gpuctl",
    "gpuctl.providers": "providers",
    "gpuctl.presets": "presets",
    "gpuctl.trainer": "trainer",
    "gpuctl.tui": "tui",
}

packages = []
package_dir = {}
for name, folder in FOLDERS.items():
    packages.append(name)
    package_dir[name] = folder
    for sub in find_packages(where=folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = str(Path(folder, *sub.split(".")))

setup(packages=packages, package_dir=package_dir)
