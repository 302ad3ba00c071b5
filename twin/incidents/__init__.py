"""Incidents (综合受理派单): the categories, the responsibility list (责任清单), and, in the
steps to come, intake, attach, dispatch and the closed loop. Core: no HTTP, no files."""
