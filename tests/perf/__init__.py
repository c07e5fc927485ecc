"""The receive/forward benchmark: data generation, systems under test, the harness (issue 8).

Not a test suite: nothing here asserts time. See docs/performance.md.
"""
