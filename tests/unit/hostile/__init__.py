"""The hostile-input suite: a package, so that its conftest is imported as hostile.conftest and does not
shadow tests/unit/conftest.py for the test modules collected after it."""
