"""The Bazel BUILD files declare every module and every test file of the tree."""

import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_build_files_match_tree():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "update_build.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_is_declared():
    declared = set()
    for build_file in REPO_ROOT.glob("mtl_layers/**/BUILD"):
        text = build_file.read_text(encoding="utf-8")
        for module in build_file.parent.glob("*.py"):
            if f'"{module.name}"' in text:
                declared.add(module)
    modules = set(REPO_ROOT.glob("mtl_layers/**/*.py"))
    assert modules - declared == set()


def test_every_test_file_is_declared():
    missing = []
    for test_file in REPO_ROOT.glob("tests/**/*_test.py"):
        build_file = test_file.parent / "BUILD"
        text = build_file.read_text(encoding="utf-8") if build_file.exists() else ""
        if f'name = "{test_file.stem}"' not in text or f'"{test_file.name}"' not in text:
            missing.append(test_file.relative_to(REPO_ROOT).as_posix())
    assert missing == []
