from workerwatch.cli import main

raise SystemExit(main())
