"""Pipe networks (管网): the topology built from geometry, its connectivity report, traces,
valve isolation, the burst workflow and the excavation check. No HTTP here: api/routes/
network.py translates requests to these calls.
"""
