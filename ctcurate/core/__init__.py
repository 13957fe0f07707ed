"""The shared core every command stands on: findings and their codes, dataset layout, the cache
file, atomic writes, the dataset lock, safe image decoding, sheet reading, the HTML page frame.

Imports nothing from the command packages.
"""
