"""TEST DOUBLE of the ais_bench inference tool (``python3 -m ais_bench``). See tests/doubles/README.md."""

__version__ = "0.0.0+test-double"
