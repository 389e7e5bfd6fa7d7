"""The worker-side heartbeat library, under the name existing workers import.

The library is its own standard-library-only distribution, ``workerwatch-heartbeat``
(``heartbeat/`` in this repository, module ``workerwatch_heartbeat``), so a worker installs
it without psutil, pydantic, requests or PyYAML; the integration bundles it, and this
module keeps ``from workerwatch.heartbeat import Heartbeat`` working where the integration
is installed.
"""

from workerwatch_heartbeat import *  # noqa: F403
from workerwatch_heartbeat import __all__  # noqa: F401
