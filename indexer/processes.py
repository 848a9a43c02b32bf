"""Whether the process a temporary file or folder is named for still runs.

Writers name their temporary files and folders with their process id (the store's derived files,
an export's folder), so that what a crash or a kill -9 left behind can be told from the work of a
writer still running, and removed.
"""

from __future__ import annotations

import os


def writer_running(pid: int) -> bool:
    """Whether process ``pid`` still runs (this one counts; one that is not ours to signal too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours to signal
        return True
    return True
