"""`ctcurate add-contribution`: reading a contribution, judging it against the dataset, applying it
all-or-nothing.
"""
