"""nri-workerwatch: catches queue workers that are alive but have silently stopped working."""

__version__ = "0.1.0"
INTEGRATION_NAME = "nri-workerwatch"
