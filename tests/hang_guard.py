"""The one limit on how long a test waits for a child process.

A test waits on a condition (a child that exits, a file it writes), never on a number of seconds
chosen to be "enough"; this limit only stops a child that hangs, and is long enough that a slow
child on a loaded machine is never cut short.
"""

HANG_GUARD_S = 900  # seconds; the slowest child (torchrun, two ranks) takes about one minute on 2 busy cores
