"""`ctcurate check-leakage`: fingerprints, candidate search, pixel verification, the report and
`--fix-splits`.
"""
