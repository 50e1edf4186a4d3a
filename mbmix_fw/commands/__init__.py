"""The ``mbmix-fw`` command line and the commands behind it (report, render, diagnose). The top layer.
"""
