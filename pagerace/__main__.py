from pagerace.harness.cli import main

raise SystemExit(main())
