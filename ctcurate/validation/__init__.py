"""`ctcurate validate`: row schemas, cross-file checks and the `--fix` copy.
"""
