from workerwatch.cli import entry

entry()
