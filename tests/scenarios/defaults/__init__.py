"""Programs whose *global* start method is a guarded one.

Each writes a JSON report (path in $REPORT) of the pids and process groups
of everything it started, then exits.  Started by tests/test_start_methods.py
as ``python <file>`` or ``python -m defaults``.
"""
