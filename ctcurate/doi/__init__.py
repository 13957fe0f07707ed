"""`ctcurate doi`: what a DOI looks like (`normalize`) and whether it exists (`resolve`, over
`polite_http`).
"""
